"""The house style every figure shares: a figure made without pyplot, written atomically and reproducibly
(PNG, SVG, PDF), and the small helpers of ticks, fading and masked cells.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import InputError, MiniGPTGeomError
from ...io.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from torch import Tensor

FORMATS = ("png", "svg", "pdf")
DEFAULT_DPI = 150
# No creation date in SVG and PDF files, and SVG ids from a fixed salt: the same figure gives the same bytes.
REPRODUCIBLE = {"png": None, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
SVG_SALT = "minigpt_geom"
MAX_TICKS = 40  # tick labels per axis, at most
MASKED = "0.8"  # grey: cells that do not exist (a key after its query, a summed column), unlike a value of 0


def new_figure(width: float, height: float) -> "Figure":
    """An empty figure of width × height inches (imports matplotlib, with a clear error if it is missing)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MiniGPTGeomError("plots need matplotlib: pip install 'minigpt-geom[plot]'") from None
    return Figure(figsize=(width, height), layout="constrained")


def figure_format(path: str | Path, format: str | None = None) -> str:
    """"png", "svg" or "pdf": `format` if given, else the path's suffix; InputError for anything else."""
    chosen = (format if format is not None else Path(path).suffix.removeprefix(".")).lower()
    if chosen not in FORMATS:
        source = f"format {format!r}" if format is not None else f"suffix of {Path(path).name!r}"
        raise InputError(f"figures are written as {', '.join(FORMATS)}; the {source} is none of them")
    return chosen


def save_figure(fig: "Figure", path: str | Path, dpi: int = DEFAULT_DPI, format: str | None = None) -> Path:
    """Write the figure to `path` atomically as PNG, SVG or PDF (see figure_format), then close it.

    A PNG has ⌊width · dpi⌋ × ⌊height · dpi⌋ pixels for a figure of width × height inches. Closing clears
    the figure to free its memory (these figures are never registered with pyplot: nothing else to close)."""
    from matplotlib import rc_context

    chosen = figure_format(path, format)
    if dpi <= 0:
        raise InputError(f"dpi must be positive, got {dpi}")
    with rc_context({"svg.hashsalt": SVG_SALT}):
        path = atomic_write(path, lambda temporary: fig.savefig(temporary, dpi=dpi, format=chosen,
                                                                metadata=REPRODUCIBLE[chosen]))
    fig.clear()
    return path


def figure_png(fig: "Figure", dpi: int = DEFAULT_DPI) -> bytes:
    """The figure as PNG bytes (for embedding in a page)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    return buffer.getvalue()


def integer_x(ax: "Axes") -> None:
    """Ticks only at whole numbers (layers, counts) on the x axis."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def thinned(n: int, most: int = MAX_TICKS) -> range:
    """Every k-th index of 0 … n−1, k the smallest step that leaves at most `most` of them."""
    return range(0, n, max(1, math.ceil(n / most)))


def fade(n_lines: int) -> float:
    """Opacity of one of n background lines: 500 lines at full opacity would hide everything."""
    return min(0.6, 30 / max(n_lines, 1))


def as_array(values: "Tensor | np.ndarray") -> np.ndarray:
    """A tensor (even bfloat16, which NumPy cannot read) or array as float64 NumPy."""
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def with_masked(cmap_name: str, under: bool = False):
    """The colour map with MASKED for NaN cells (and, if `under`, its lowest colour below its range)."""
    from matplotlib import colormaps

    cmap = colormaps[cmap_name]
    return cmap.with_extremes(bad=MASKED, under=cmap(0.0) if under else None)


def masked_patch(label: str):
    """A legend entry for the grey MASKED cells."""
    from matplotlib.patches import Patch

    return Patch(facecolor=MASKED, edgecolor="0.5", label=label)
