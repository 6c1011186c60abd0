"""What a command leaves behind: its outputs staged in a temporary folder and moved into -o together (a
failure leaves -o as it was), figures written atomically, the lines that say where each file went, and progress
bars on a terminal only. Checked before any work: the output folder can be made, and matplotlib is there when
the command draws.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..analysis.tables import Table, write_csv
from ..errors import InputError, OutputError
from ..io.files import atomic_write, move_together

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from tqdm import tqdm


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


def checked_output(args: argparse.Namespace) -> Path | None:
    """The folder -o names, checked before any work (not created; None without -o), and matplotlib when the
    command will draw into it."""
    if not args.out:
        return None
    out = output_folder(args.out)
    require_matplotlib(args)
    return out


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
    `out` (created now) together (io/files.py's move_together: every target checked first, all moved or none),
    each keeping the mode of the file it replaces; on any error they are deleted, so a failure (in a figure, a
    full disk, a target that cannot be replaced) leaves `out` as it was, with no new partial output."""
    out = Path(out)
    ancestor = next(p for p in (out, *out.parents) if p.exists())  # the same file system as out: rename works
    try:
        stage = Path(tempfile.mkdtemp(dir=ancestor, prefix=f".{out.name or 'out'}.", suffix=".partial"))
    except OSError as error:
        raise OutputError(f"cannot write into {ancestor} (for -o {out}): {error.strerror or error}") from None
    try:
        yield stage
        make_output_folder(out)
        move_together([(path, output_file(out, path.name)) for path in sorted(stage.iterdir())], stage)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def output_file(folder: Path, name: str) -> Path:
    """folder/name, refused if it would lie outside the folder once links are resolved (a link at the name
    included: the writer follows links, never replaces them). realpath, not resolve: a loop of links is left for
    the writer to refuse in one line (resolve raises RuntimeError on one)."""
    path = folder / name
    if Path(os.path.realpath(path)).parent != Path(os.path.realpath(folder)):
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


def write_experiment(args: argparse.Namespace, out: Path, stem: str, table: Table, records: list[dict] | None,
                     figure: str, result: object) -> int:
    """What every causal experiment does last: print `table` in --style, then write stem.csv (the records, or
    with None the table's own rows; full precision) and, unless --no-plot, the figure
    `analysis.plots.<figure>(result)` as stem.FORMAT, together."""
    from ..analysis import plots  # here, not at the top: --help stays free of matplotlib and torch

    print(table.format(args.style), end="")
    with staged_outputs(out) as stage:
        rows = table if records is None else Table.from_records(records)
        written = [write_csv(output_file(stage, f"{stem}.csv"), rows)]
        if not args.no_plot:
            written.append(write_figure(getattr(plots, figure)(result), output_file(stage, f"{stem}.{args.format}"), args.dpi))
    report_written(out, written)
    return 0
