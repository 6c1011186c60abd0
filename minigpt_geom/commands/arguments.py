"""The argument vocabulary every command shares, each option spelled one way (tests/commands/test_cli.py holds
them to it): --weights, --tokenizer, --device, --dtype, --quiet, --pattern, a positional text defaulting to
PAPER_PROMPT, -o/--out, and for figures --format, --dpi, --no-plot; argument types whose errors are one line
naming the option. Nothing here imports torch or matplotlib: `--help` stays fast.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..analysis.plots.style import FORMATS as FIGURE_FORMATS
from ..analysis.tables import TABLE_STYLES
from ..errors import MiniGPTGeomError

DTYPES = ("float32", "bfloat16", "float16")
FILE_PATTERN = "*.txt"  # the files of a corpus folder that drift, prepare, train and remove-ln read
PAPER_PROMPT = "To kill two birds with one stone"  # the paper's example: the default text of every text command
MAX_DPI = 1200  # beyond print quality; a 10 x 8 in figure at 1200 dpi is already 115 million pixels


class UsageError(MiniGPTGeomError):
    """A command line argparse refuses; printed as one line naming the command (`prog`), exit code 2."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{message} (usage: {prog} --help)")
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line that names its own command (not a usage block on exit)."""

    def error(self, message: str) -> None:
        """Raise UsageError instead of printing the usage and exiting."""
        raise UsageError(self.prog, message)


def add_command(subparsers: argparse._SubParsersAction, name: str, summary: str, description: str = ""
                ) -> argparse.ArgumentParser:
    """A subcommand parser: no abbreviated options, `summary` in the command list, its own help."""
    return subparsers.add_parser(name, help=summary, description=description or summary, allow_abbrev=False)


# ---- argument types: each a one-line usage error naming the option -----------------------------------------

def whole_number(text: str) -> int:
    """An integer, or a usage error."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type for counts: an integer ≥ 1."""
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def not_negative(value: int | float) -> int | float:
    """value, or a usage error if it is below 0."""
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value:g}")
    return value


def index(text: str) -> int:
    """argparse type for a layer, head or position: an integer ≥ 0 (the model checks the upper end)."""
    return not_negative(whole_number(text))


def real_number(text: str) -> float:
    """A finite real number, or a usage error (float() also takes nan and inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """argparse type for a scale such as DyT's α: a finite number > 0."""
    value = real_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative(text: str) -> float:
    """argparse type for a tolerance or a temperature: a finite number ≥ 0."""
    return not_negative(real_number(text))


def probability(text: str) -> float:
    """argparse type for a probability mass such as top-p: a number in (0, 1]."""
    value = real_number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def utf8_text(text: str) -> str:
    """argparse type for text to tokenise: UTF-8 on the command line (Python keeps each other byte as a lone
    surrogate, U+DC80 to U+DCFF, which no file or tokenizer can take)."""
    bad = next((i for i, c in enumerate(text) if "\udc80" <= c <= "\udcff"), None)
    if bad is not None:
        raise argparse.ArgumentTypeError(f"is not UTF-8 text: byte {ord(text[bad]) - 0xdc00:#04x} at character {bad}")
    return text


def word(text: str) -> str:
    """argparse type for a token named by its text (--word): non-empty UTF-8."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty: give one of the text's tokens, e.g. ' one'")
    return utf8_text(text)


def seed(text: str) -> int:
    """argparse type for a random seed: an integer in [0, 2^64), what torch's generators take."""
    value = whole_number(text)
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^64), got {value}")
    return value


def path_text(text: str) -> str:
    """argparse type for a file or folder: any text but the empty one, which would name the working directory."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path names no file or folder (the working directory is .)")
    return text


def folder_path(text: str) -> Path:
    """argparse type for a folder (-o DIR): a non-empty path, as a Path."""
    return Path(path_text(text))


def dpi(text: str) -> int:
    """argparse type for --dpi: 1 to MAX_DPI (a figure's pixels grow as dpi²)."""
    value = positive_int(text)
    if value > MAX_DPI:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DPI} (a figure's memory grows as dpi²), got {value}")
    return value


# ---- shared arguments --------------------------------------------------------------------------------------

def add_model_arguments(parser: argparse.ArgumentParser, tokenizer: bool = True) -> None:
    """--weights, --tokenizer (unless the command reads no text), --device, --dtype and --quiet."""
    group = parser.add_argument_group("model")
    group.add_argument("--weights", default="gpt2", type=path_text, metavar="SOURCE",
                       help="preset (gpt2 … gpt2-xl), hub id, folder or .safetensors file (default: gpt2)")
    if tokenizer:
        group.add_argument("--tokenizer", type=path_text, metavar="SOURCE",
                           help="where vocab.json and merges.txt are (default: beside the weights)")
    group.add_argument("--device", default="cpu",
                       help="torch device: cpu, cuda, cuda:1, mps …, or auto: cuda if available, else mps, else cpu "
                            "(default: cpu)")
    group.add_argument("--dtype", default="float32", choices=DTYPES, help="weights' precision (default: float32)")
    add_quiet_argument(group)


def add_quiet_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--quiet: no progress bars and no notes on stderr (bars are drawn on a terminal only anyway)."""
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or notes on stderr (bars are shown only when stderr is a terminal)")


def add_pattern_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--pattern GLOB: which files of a corpus folder are read."""
    parser.add_argument("--pattern", default=FILE_PATTERN, metavar="GLOB",
                        help=f"files of a corpus folder to read, at any depth, e.g. '*.py' (default: {FILE_PATTERN})")


class JoinWords(argparse.Action):
    """A positional text given as one quoted argument or as several words: the words joined by single spaces,
    so `lens To kill two birds` reads "To kill two birds" (the shell has already split it at the spaces)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        """Store the words joined; argparse passes the default itself when no word was given."""
        setattr(namespace, self.dest, values if isinstance(values, str) else " ".join(values))


def add_text_argument(parser: argparse.ArgumentParser, what: str = "the text to run through the model",
                      default: str = PAPER_PROMPT, name: str = "text") -> None:
    """The positional text of a command that reads one (the paper's example by default): quoted, or as words."""
    shown = f"{default!r}" if default else "empty"
    parser.add_argument(name, nargs="*", default=default, action=JoinWords, metavar=name.upper(), type=utf8_text,
                        help=f"{what}, at most the model's context; quoted, or as plain words joined by spaces "
                             f"(default: {shown})")


def add_output_argument(parser: argparse.ArgumentParser, what: str, default: str | None = None) -> None:
    """-o/--out DIR: where the command writes `what`."""
    parser.add_argument("-o", "--out", type=folder_path, default=default, metavar="DIR",
                        help=f"folder to write {what} into" + (f" (default: {default})" if default else
                                                               " (default: print only)"))


def add_figure_arguments(parser: argparse.ArgumentParser) -> None:
    """--format, --dpi and --no-plot: for every command that draws."""
    group = parser.add_argument_group("figures")
    group.add_argument("--format", default="png", choices=FIGURE_FORMATS, help="figure file format (default: png)")
    add_dpi_argument(group)
    group.add_argument("--no-plot", action="store_true", help="write the tables only (no matplotlib needed)")


def add_experiment_outputs(parser: argparse.ArgumentParser, stem: str) -> None:
    """-o, --style and the figure options of a causal experiment, which writes stem.csv and stem.FORMAT."""
    add_output_argument(parser, f"{stem}.csv and {stem}.FORMAT", default=stem)
    add_style_argument(parser)
    add_figure_arguments(parser)


def add_dpi_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--dpi N: the figures' resolution, at most MAX_DPI."""
    parser.add_argument("--dpi", type=dpi, default=100, metavar="N",
                        help=f"figure resolution, dots per inch, at most {MAX_DPI} (default: 100)")


def add_vocabulary_arguments(parser: argparse.ArgumentParser) -> None:
    """--vocab-from and --min-count: restrict full-vocabulary rankings to words seen in a corpus."""
    group = parser.add_argument_group("vocabulary of the rankings")
    group.add_argument("--vocab-from", nargs="+", type=path_text, metavar="PATH",
                       help="rank only words seen in these files: text files or folders, a folder `prepare` wrote, "
                            "or .bin token files (default: every word)")
    group.add_argument("--min-count", type=positive_int, default=1, metavar="N",
                       help="with --vocab-from, words seen at least N times (default: 1)")


def add_ranking_arguments(parser: argparse.ArgumentParser) -> None:
    """--style, --vocab-from/--min-count and the figure options: for every command that ranks the vocabulary
    into tables and figures (embeddings, probe, svd, qk)."""
    add_style_argument(parser)
    add_vocabulary_arguments(parser)
    add_figure_arguments(parser)


def add_style_argument(parser: argparse.ArgumentParser) -> None:
    """--style: how tables are printed."""
    parser.add_argument("--style", default="text", choices=TABLE_STYLES, help="printed table style (default: text)")


def add_highlight_arguments(parser: argparse.ArgumentParser) -> None:
    """--word WORD | --position N: the token whose path is highlighted."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--word", type=word, help="token to highlight, e.g. ' one' (default: ' one' if present, else the last)")
    group.add_argument("--position", type=whole_number,
                       help="position of the token to highlight (negative counts from the end)")


def add_contrast_arguments(parser: argparse.ArgumentParser, answer: str, wrong: str,
                           metric: str = "logit_diff") -> None:
    """--answer, --wrong and --metric: what a causal experiment measures (analysis/metric.py); `answer` and
    `wrong` say what each word is when it is not given."""
    group = parser.add_argument_group("what is measured")
    group.add_argument("--answer", metavar="WORD", help=f"the word the prompt should lead to, one token, e.g. "
                                                        f"' Paris' (default: {answer})")
    group.add_argument("--wrong", metavar="WORD", help=f"the word it is measured against, one token (default: {wrong})")
    group.add_argument("--metric", default=metric, choices=("logit_diff", "probability"),
                       help=f"logit difference answer − wrong, or the answer's probability (default: {metric})")


def add_batch_argument(parser: argparse.ArgumentParser) -> None:
    """--batch-size N: edited copies of the prompt run in one forward pass."""
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="edited copies of the prompt per forward pass (default: as many as an eighth of the "
                             "device's memory holds)")
