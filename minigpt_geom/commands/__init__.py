"""Subcommands of `minigpt-geom`, one module each, and what they share: arguments, loading, outputs, progress.

Every command follows one order, so that a mistake costs as little as possible and leaves nothing behind:
check the arguments (argparse, sizes against the memory they need), the output folder (not created yet) and
matplotlib when it draws; load the model and tokenizer (validating --device and --dtype); run the analysis;
only then write: every output into a temporary folder, moved into the output folder together at the end.

The options every command spells the same way (README's "Commands" section, tests/commands/test_cli.py holds them):
--weights, --tokenizer, --device, --dtype, --quiet, --pattern, a positional text defaulting to PAPER_PROMPT,
-o/--out, and for figures --format, --dpi, --no-plot. Nothing here imports torch at import time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from ..analysis.plots import FORMATS as FIGURE_FORMATS
from ..analysis.tables import TABLE_STYLES, Table, write_csv
from ..errors import InputError, MiniGPTGeomError, OutputError
from ..io.files import atomic_write, new_file_mode

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure
    from tqdm import tqdm

    from ..model.gpt2 import GPT2
    from ..text.tokenizer import Tokenizer
    from ..training.distributed import Processes

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


def index(text: str) -> int:
    """argparse type for a layer, head or position: an integer ≥ 0 (the model checks the upper end)."""
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def seed(text: str) -> int:
    """argparse type for a random seed: an integer in [0, 2^64), what torch's generators take."""
    value = whole_number(text)
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^64), got {value}")
    return value


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
    group.add_argument("--weights", default="gpt2", metavar="SOURCE",
                       help="preset (gpt2 … gpt2-xl), hub id, folder or .safetensors file (default: gpt2)")
    if tokenizer:
        group.add_argument("--tokenizer", metavar="SOURCE",
                           help="where vocab.json and merges.txt are (default: beside the weights)")
    group.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps … (default: cpu)")
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


def add_text_argument(parser: argparse.ArgumentParser, what: str = "the text to run through the model") -> None:
    """The positional text of a command that reads one, the paper's example by default."""
    parser.add_argument("text", nargs="?", default=PAPER_PROMPT,
                        help=f"{what}, at most the model's context (default: {PAPER_PROMPT!r})")


def add_output_argument(parser: argparse.ArgumentParser, what: str, default: str | None = None) -> None:
    """-o/--out DIR: where the command writes `what`."""
    parser.add_argument("-o", "--out", type=Path, default=default, metavar="DIR",
                        help=f"folder to write {what} into" + (f" (default: {default})" if default else
                                                               " (default: print only)"))


def add_figure_arguments(parser: argparse.ArgumentParser) -> None:
    """--format, --dpi and --no-plot: for every command that draws."""
    group = parser.add_argument_group("figures")
    group.add_argument("--format", default="png", choices=FIGURE_FORMATS, help="figure file format (default: png)")
    add_dpi_argument(group)
    group.add_argument("--no-plot", action="store_true", help="write the tables only (no matplotlib needed)")


def add_dpi_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--dpi N: the figures' resolution, at most MAX_DPI."""
    parser.add_argument("--dpi", type=dpi, default=100, metavar="N",
                        help=f"figure resolution, dots per inch, at most {MAX_DPI} (default: 100)")


def add_vocabulary_arguments(parser: argparse.ArgumentParser) -> None:
    """--vocab-from and --min-count: restrict full-vocabulary rankings to words seen in a corpus."""
    group = parser.add_argument_group("vocabulary of the rankings")
    group.add_argument("--vocab-from", nargs="+", metavar="PATH",
                       help="rank only words seen in these files: text files or folders, a folder `prepare` wrote, "
                            "or .bin token files (default: every word)")
    group.add_argument("--min-count", type=positive_int, default=1, metavar="N",
                       help="with --vocab-from, words seen at least N times (default: 1)")


def allowed_words(args: argparse.Namespace, tokenizer: Tokenizer, model: GPT2) -> torch.Tensor | None:
    """The mask [V] of --vocab-from's words seen --min-count times, on the model's device; None without it."""
    if not args.vocab_from:
        return None
    from ..analysis.vocabulary import allowed_words as mask, word_counts

    counts = word_counts(args.vocab_from, tokenizer, model.config.vocab_size)
    return mask(counts, args.min_count, device=model.wte.weight.device)


def add_style_argument(parser: argparse.ArgumentParser) -> None:
    """--style: how tables are printed."""
    parser.add_argument("--style", default="text", choices=TABLE_STYLES, help="printed table style (default: text)")


def add_highlight_arguments(parser: argparse.ArgumentParser) -> None:
    """--word WORD | --position N: the token whose path is highlighted."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--word", help="token to highlight, e.g. ' one' (default: ' one' if present, else the last)")
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


# ---- loading -----------------------------------------------------------------------------------------------

def usable_device(name: str) -> torch.device:
    """torch.device(name) if this machine can allocate on it, else InputError."""
    import torch

    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:  # a bad name; CUDA not compiled in, no driver, no such GPU
        reason = (str(error).strip() or type(error).__name__).splitlines()[0].split(". ")[0]  # its first sentence
        raise InputError(f"--device {name!r} cannot be used here ({reason}); try --device cpu") from None
    if device.type == "meta":
        raise InputError("--device 'meta' holds no numbers; try --device cpu")
    return device


@contextmanager
def processes_for(args: argparse.Namespace) -> Iterator[Processes]:
    """This process's place among torchrun's (alone without torchrun) on the checked --device; at the end it
    leaves the process group, whatever happened."""
    import torch.distributed as dist

    from ..training.distributed import start_processes

    processes = start_processes(usable_device(args.device))
    try:
        yield processes
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def weights_folder(source: str | os.PathLike) -> Path:
    """The folder the weights of `source` (a preset, hub id, folder or file) are read from, resolved."""
    from ..io.checkpoint import checkpoint_files

    return checkpoint_files(source)[0].parent.resolve()


def source_line(source: str | os.PathLike) -> str:
    """`weights: SOURCE from FOLDER`, the line every loading command prints: where the files really came from
    (a preset's drop-in folder, the hub cache, …)."""
    return f"weights: {source} from {weights_folder(source)}"


def load_model(args: argparse.Namespace) -> GPT2:
    """The GPT2 of --weights, on --device in --dtype (the device checked first)."""
    import torch

    from ..model.gpt2 import GPT2

    return GPT2.from_pretrained(args.weights, device=usable_device(args.device), dtype=getattr(torch, args.dtype))


def load_model_and_tokenizer(args: argparse.Namespace, announce: bool = True) -> tuple[GPT2, Tokenizer]:
    """(GPT2, Tokenizer) from --weights and --tokenizer, on --device in --dtype (the device checked first);
    with `announce`, prints where the weights came from (the first line of the command's output)."""
    import torch

    from ..analysis import load_model_and_tokenizer as load

    device = usable_device(args.device)
    loaded = load(args.weights, args.tokenizer, device=device, dtype=getattr(torch, args.dtype))
    if announce:
        print(source_line(args.weights))
    return loaded


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device` (None when unknown): the GPU's free memory, or the
    system's MemAvailable."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):  # not Linux: the physical memory, if the OS says
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None


def check_fits(option: str, needed: int, device: torch.device) -> None:
    """InputError before allocating when an option asks for more memory than `device` has (an estimate)."""
    available = available_memory(device)
    if available is not None and needed > available:
        raise InputError(f"{option} needs about {needed / 2**30:.1f} GiB on {device}, more than the "
                         f"{available / 2**30:.1f} GiB available: lower it")


def require_matplotlib(args: argparse.Namespace) -> None:
    """InputError up front, before any work, if the command will draw and matplotlib is missing."""
    if getattr(args, "no_plot", False):
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        hint = ", or pass --no-plot for the tables alone" if hasattr(args, "no_plot") else ""
        raise InputError(f"{args.command} draws figures with matplotlib: pip install 'minigpt-geom[plot]'{hint}"
                         ) from None


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw progress bars: stderr is a terminal and --quiet was not given (never `\r` into a file)."""
    return not args.quiet and sys.stderr.isatty()


def progress_bar(args: argparse.Namespace, total: int, desc: str, unit: str = "step") -> tqdm:
    """A tqdm bar on stderr; silent with --quiet or when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not show_progress(args), leave=False,
                unit_scale=unit == "B")


# ---- outputs -----------------------------------------------------------------------------------------------

def output_folder(path: str | os.PathLike) -> Path:
    """The folder -o names, checked before any work but not created: not a file, inside a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"-o {path} is a file: give a folder to write the outputs into")
    ancestor = next(p for p in (path, *path.parents) if p.exists())  # "." at the latest
    if not ancestor.is_dir():
        raise OutputError(f"cannot create the output folder {path}: {ancestor} is a file")
    try:
        with tempfile.TemporaryFile(dir=ancestor):  # the one sure test that files can be made there
            pass
    except OSError as error:
        raise OutputError(f"cannot write into {ancestor} (for -o {path}): {error.strerror or error}") from None
    return path


def make_output_folder(path: Path) -> Path:
    """Create the folder -o names (after the inputs have been validated)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the output folder {path}: {error.strerror or error}") from None
    return path


@contextmanager
def staged_outputs(out: Path) -> Iterator[Path]:
    """A temporary folder for a command's outputs. When the block ends without error its files are moved into
    `out` (created now) together, each keeping the mode of the file it replaces; on any error they are deleted,
    so a failure (in a figure, a full disk) leaves `out` as it was, with no new partial output."""
    out = Path(out)
    ancestor = next(p for p in (out, *out.parents) if p.exists())  # the same file system as out: rename works
    try:
        stage = Path(tempfile.mkdtemp(dir=ancestor, prefix=f".{out.name or 'out'}.", suffix=".partial"))
    except OSError as error:
        raise OutputError(f"cannot write into {ancestor} (for -o {out}): {error.strerror or error}") from None
    try:
        yield stage
        make_output_folder(out)
        for path in sorted(stage.iterdir()):
            target = output_file(out, path.name)
            try:
                os.chmod(path, new_file_mode(target))
                os.replace(path, target)
            except OSError as error:
                raise OutputError(f"cannot write {target}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def output_file(folder: Path, name: str) -> Path:
    """folder/name, refused if it would lie outside the folder once links are resolved."""
    path = folder / name
    if path.parent.resolve() != folder.resolve():
        raise OutputError(f"{path} would be written outside the output folder {folder}")
    return path


def write_figure(fig: Figure, path: Path, dpi: int) -> Path:
    """Save a figure atomically (matplotlib writes a temporary file beside `path`, then it replaces `path`)."""
    from ..analysis import plots

    return atomic_write(path, lambda temporary: plots.save_figure(fig, temporary, dpi=dpi))


def report_written(out: Path, paths: list[Path]) -> None:
    """Print where each output went (`paths` as staged_outputs wrote them, moved into `out` since)."""
    for path in paths:
        print(f"wrote {Path(out) / path.name}")


def write_experiment(args: argparse.Namespace, out: Path, stem: str, table: Table, records: list[dict],
                     figure: Callable[[], Figure]) -> int:
    """What every causal experiment does last: print `table` in --style, then write
    stem.csv (the records, full precision) and, unless --no-plot, the figure as stem.FORMAT, together."""
    print(table.format(args.style), end="")
    with staged_outputs(out) as stage:
        written = [write_csv(output_file(stage, f"{stem}.csv"), Table.from_records(records))]
        if not args.no_plot:
            written.append(write_figure(figure(), output_file(stage, f"{stem}.{args.format}"), args.dpi))
    report_written(out, written)
    return 0
