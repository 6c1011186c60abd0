"""Subcommands of `minigpt-geom`, one module each, and what they share: arguments, loading, outputs, progress.

Every command follows one order, so that a mistake costs as little as possible and leaves nothing behind:
check the arguments (argparse), the output folder (not created yet) and matplotlib when it draws; load the
model and tokenizer (validating --device and --dtype); run the analysis; only then create the output folder
and write, each file atomically through files.py.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import InputError, MiniGPTGeomError, OutputError
from ..files import atomic_write

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure
    from tqdm import tqdm

    from ..model import GPT2
    from ..tokenizer import Tokenizer
    from ..train import Processes

DTYPES = ("float32", "bfloat16", "float16")
FIGURE_FORMATS = ("png", "svg", "pdf")
TABLE_STYLES = ("text", "markdown", "latex")


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
    group.add_argument("--quiet", action="store_true",
                       help="no progress bars (they are off anyway when stderr is not a terminal)")


def add_output_argument(parser: argparse.ArgumentParser, what: str, default: str | None = None) -> None:
    """-o/--out DIR: where the command writes `what`."""
    parser.add_argument("-o", "--out", type=Path, default=default, metavar="DIR",
                        help=f"folder to write {what} into" + (f" (default: {default})" if default else
                                                               " (default: print only)"))


def add_figure_arguments(parser: argparse.ArgumentParser) -> None:
    """--format, --dpi and --no-plot: for every command that draws."""
    group = parser.add_argument_group("figures")
    group.add_argument("--format", default="png", choices=FIGURE_FORMATS, help="figure file format (default: png)")
    group.add_argument("--dpi", type=positive_int, default=100, help="figure resolution, dots per inch (default: 100)")
    group.add_argument("--no-plot", action="store_true", help="write the tables only (no matplotlib needed)")


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

    from ..train import start_processes

    processes = start_processes(usable_device(args.device))
    try:
        yield processes
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def load_model(args: argparse.Namespace) -> GPT2:
    """The GPT2 of --weights, on --device in --dtype (the device checked first)."""
    import torch

    from ..model import GPT2

    return GPT2.from_pretrained(args.weights, device=usable_device(args.device), dtype=getattr(torch, args.dtype))


def load_model_and_tokenizer(args: argparse.Namespace) -> tuple[GPT2, Tokenizer]:
    """(GPT2, Tokenizer) from --weights and --tokenizer, on --device in --dtype (the device checked first)."""
    import torch

    from ..analysis import load_model_and_tokenizer as load

    device = usable_device(args.device)
    return load(args.weights, args.tokenizer, device=device, dtype=getattr(torch, args.dtype))


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


def progress_bar(args: argparse.Namespace, total: int, desc: str, unit: str = "step") -> tqdm:
    """A tqdm bar on stderr; silent with --quiet or when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=True if args.quiet else None, leave=False,
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


def report_written(paths: list[Path]) -> None:
    """Print where each output went."""
    for path in paths:
        print(f"wrote {path}")
