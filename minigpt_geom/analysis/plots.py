"""Figures of the analyses, drawn from results computed elsewhere (matplotlib; PNG, SVG or PDF).

Each `*_figure` function takes computed data and returns a `matplotlib.figure.Figure`; `save_figure`
writes it atomically at a chosen dpi and format, and `figure_png` gives its PNG bytes. Figures are built
without pyplot (no global state, no GUI backend), and matplotlib is imported only when a figure is drawn.

What every figure keeps to:
  - labelled axes, a title, and a colour bar or legend wherever colour carries meaning;
  - a size that stops growing with the text: cells and fonts are sized for reading, figures are capped
    at about a page, tick labels thinned to at most MAX_TICKS per axis, and the logit-lens grid shows
    every k-th position past LENS_ROWS positions (draw pages with its `positions` argument);
  - tokens whole, quoted as Python shows them (' one', '\\n'), except in the probe, query-key and reach
    figures and along the trajectory, where a token longer than 14 characters is cut and marked with its
    length (short_label); characters the font
    cannot draw (CJK, emoji with matplotlib's bundled DejaVu Sans) are written as escapes ('\\u4e16'), so
    that drawing never warns about missing glyphs and the picture is the same on every machine;
  - maths in mathtext ($\\mathrm{LN}_f(x_l)$), labels that say what the points are for the model's own norm
    variant (sphere.map_label, NormVariant.geometry), one colour scale wherever values are compared, and nothing drawn at a value
    that was not measured.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import InputError, MiniGPTGeomError
from ..io.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from torch import Tensor

    from ..model.sphere import NormVariant
    from ..model.trace import Trace
    from .compare import Comparison
    from .drift import DriftResult
    from .embeddings import RankedWord
    from .lens import LensResult
    from .probe import ProbeRow
    from .qk import WordPair
    from .trajectory import Trajectory

FORMATS = ("png", "svg", "pdf")
DEFAULT_DPI = 150
# No creation date in SVG and PDF files, and SVG ids from a fixed salt: the same figure gives the same bytes.
REPRODUCIBLE = {"png": None, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
SVG_SALT = "minigpt_geom"
MAX_TICKS = 40  # tick labels per axis, at most
LENS_ROWS = 64  # positions in one lens grid: about a page at 7 pt
CELL_FONT = 7.0  # points, for words written in cells
SMALLEST_FONT = 3.0  # a long token is shrunk to fit its cell, down to this size
MASKED = "0.8"  # grey: cells that do not exist (a key after its query, a summed column), unlike a value of 0


# ---- figures in and out ---------------------------------------------------------------------------------

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


# ---- words as labels --------------------------------------------------------------------------------------

@functools.cache
def font_face(weight: str = "normal"):
    """matplotlib's FT2Font of the default font at `weight`, set to 72 pt (1 em = 72 units)."""
    from matplotlib.font_manager import FontProperties, findfont
    from matplotlib.ft2font import FT2Font

    face = FT2Font(findfont(FontProperties(weight=weight)))
    face.set_size(72, 72)
    return face


@functools.cache
def drawable() -> frozenset[int]:
    """Code points that both the regular and the bold default font have a glyph for."""
    return frozenset(font_face("normal").get_charmap()) & frozenset(font_face("bold").get_charmap())


def word_label(word: str) -> str:
    """A token quoted as Python shows it (' one', '\\n') and safe to draw: characters the font lacks
    written as Python escapes ('世' -> '\\u4e16'), `$` escaped so that it is not read as mathtext."""
    known = drawable()
    text = "".join(c if ord(c) in known else ascii(c)[1:-1] for c in repr(word))
    return text.replace("$", r"\$")


def mathtext_problem(label: str) -> str | None:
    """Why matplotlib cannot draw the user's `label` ('$$': "Expected end of text"), or None: text with an even
    number of unescaped `$` is parsed as mathtext, and a parse error would end the figure half-way."""
    from matplotlib import cbook
    from matplotlib.mathtext import MathTextParser

    if not cbook.is_math_text(label):
        return None
    try:
        MathTextParser("path").parse(label)
    except ValueError as error:  # the parser's message ends with its own one-line reason
        return (str(error).strip().splitlines() or ["not mathtext"])[-1].removeprefix("ParseException: ")
    return None


def short_label(word: str, most: int = 14) -> str:
    """word_label cut to at most `most` characters of the word, the cut marked with "…" and the full length
    ("'==========…' (64 chars)"), so that one long token cannot spill across the cells beside it."""
    if len(word) <= most:
        return word_label(word)
    quoted = word_label(word[:most])
    return f"{quoted[:-1]}…{quoted[-1]} ({len(word)} chars)"


@functools.cache
def advance(character: str) -> float:
    """Width of one character of the regular default font, in ems."""
    face = font_face("normal")
    return face.load_char(ord(character)).linearHoriAdvance / 65536 / 72  # 16.16 fixed point, 72 units an em


def text_width(label: str, fontsize: float = CELL_FONT) -> float:
    """Width in inches of a drawable label at `fontsize` points (the characters' advances; kerning ignored)."""
    known = drawable()
    return sum(advance(c) for c in label if ord(c) in known) * fontsize / 72


def cell_width(labels: Iterable[str], widest: float = 1.0) -> float:
    """Width in inches of a cell that holds the widest label at CELL_FONT, between 0.45 and `widest`."""
    return min(max(0.45, 0.12 + max((text_width(s) for s in labels), default=0.0)), widest)


def cell_font(label: str, width: float) -> float:
    """The font size that fits `label` into a cell `width` inches wide: CELL_FONT, or smaller for a long token."""
    needed = text_width(label) + 0.08
    return CELL_FONT if needed <= width else max(SMALLEST_FONT, CELL_FONT * width / needed)


def write_cells(ax: "Axes", labels: Sequence[Sequence[str]], width: float, white: np.ndarray,
                bold: np.ndarray | None = None) -> None:
    """Write labels[r][c] at the centre of each cell (row r, column c) of an image drawn with imshow, in white
    where white [R, C] is true (dark cells), in bold where bold [R, C] is."""
    for r, row in enumerate(labels):
        for c, label in enumerate(row):
            ax.text(c, r, label, ha="center", va="center", fontsize=cell_font(label, width),
                    color="white" if white[r, c] else "black",
                    fontweight="bold" if bold is not None and bold[r, c] else "normal")


# ---- small helpers -------------------------------------------------------------------------------------------

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


# ---- the trajectory analyses -----------------------------------------------------------------------------

def trajectory_figure(trajectory: "Trajectory", explained_variance: Sequence[float] | None = None, *,
                      path_words: Sequence[str] | None = None) -> "Figure":
    """The highlighted word's path through the layers in 3-D (left) and its approach to its prediction (right).

    Left: the final norm's output at every layer for all tokens (trajectory.points says what they are for the
    model's own ln_f: LN_f(x_l), or x_l itself without a norm), projected to 3-D; other words' paths
    are faint grey, points coloured by layer; the highlighted word in red from ■ (layer 0) to ▲ (layer L),
    with path_words[l] (the logit lens's top word at layer l) written at each of its points; the embedding of
    its prediction a star. Right, when the trajectory has target_cosine: cos(LN_f(x_l), u_pred) per layer in
    all d dimensions, which shows approach without the depth a 3-D view hides, the same words beside it.

    explained_variance [3], PCA only: each axis's share of the variance, "PC1 (37.2 % var.)"; by default
    the trajectory's own."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    coords = trajectory.coords  # [L+1, T, 3]
    n_states, T, _ = coords.shape
    h = trajectory.highlight
    cosine = trajectory.target_cosine
    fig = new_figure(15 if cosine is not None else 9.5, 7.5)
    if cosine is not None:
        left, right = fig.subfigures(1, 2, width_ratios=[1.6, 1.0])
    else:
        left, right = fig, None
    ax = left.add_subplot(projection="3d", computed_zorder=False)  # drawn in call order: the red path on top
    others = np.delete(coords, h, axis=1).transpose(1, 0, 2)  # [T−1, L+1, 3]: one polyline per other word
    if len(others):  # a one-token text has no other word
        ax.add_collection3d(Line3DCollection(list(others), colors="0.6", linewidths=0.5, alpha=fade(T) / 2))
    points = ax.scatter(*coords.reshape(-1, 3).T, c=np.repeat(np.arange(n_states), T), cmap="viridis",
                        s=min(8.0, max(2.0, 800 / T)), alpha=0.5, depthshade=False)
    path = coords[:, h]  # [L+1, 3]
    word = word_label(trajectory.words[h])
    ax.plot(*path.T, color="crimson", linewidth=2.5, label=f"{word} (position {h}), layers 0–{n_states - 1}")
    ax.scatter(*path[0], marker="s", s=70, color="crimson", edgecolor="black", depthshade=False,
               label=f"{word} at layer 0 (the embedding)")
    ax.scatter(*path[-1], marker="^", s=90, color="crimson", edgecolor="black", depthshade=False,
               label=f"{word} at layer {n_states - 1}")
    ax.scatter(*trajectory.prediction_coord, marker="*", s=300, color="orange", edgecolor="black", depthshade=False,
               label=f"{trajectory.points.replace('x_l', 'e')} of its predicted next word "
                     f"{word_label(trajectory.prediction_word)}")
    if path_words is not None:  # the lens's top word at each layer, beside the point it decodes
        for layer, (x, y, z) in enumerate(path):
            ax.text(x, y, z, f" {layer}: {short_label(path_words[layer])}", fontsize=7, color="darkred")
    if explained_variance is None:
        explained_variance = trajectory.explained_variance
    pca = trajectory.method.startswith("pca")
    for i, set_label in enumerate((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel)):
        if not pca:
            set_label(f"UMAP {i + 1}")
        elif explained_variance is None:
            set_label(f"PC{i + 1}")
        else:
            set_label(f"PC{i + 1} ({100 * float(explained_variance[i]):.1f} % var.)")
    ax.set_box_aspect(None, zoom=0.85)  # room for the axis labels inside the figure
    ax.set_title(f"{trajectory.points} of all {T} tokens, layers 0–{n_states - 1}, projected by "
                 f"{trajectory.method.upper()}", fontsize=10)
    left.colorbar(points, ax=ax, shrink=0.55, label=r"layer $l$ (0 = embedding)")
    left.legend(loc="outside lower center", ncols=2, fontsize=8)
    if right is not None:
        approach_panel(right.add_subplot(), cosine, path_words, word, trajectory.prediction_word, trajectory.points)
    return fig


def approach_panel(ax: "Axes", cosine: np.ndarray, path_words: Sequence[str] | None, word: str, target: str,
                   points: str = r"$\mathrm{LN}_f(x_l)$") -> None:
    """cos(points, u_target) against layer, each point named by the lens's top word; `points` is the mathtext
    of what the final norm makes of x_l (Trajectory.points)."""
    layers = np.arange(len(cosine))
    ax.plot(layers, cosine, "o-", color="crimson")
    if path_words is not None:
        for layer, value in enumerate(cosine):
            ax.annotate(short_label(path_words[layer]), (layer, value), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color="darkred", rotation=30)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel(r"layer $l$ (0 = embedding)")
    ax.set_ylabel("$\\cos(" + points.strip("$") + r",\ u_{\mathrm{pred}})$")
    integer_x(ax)
    ax.grid(alpha=0.3)
    ax.set_title(f"{word} facing its prediction {word_label(target)}\n(all d dimensions; words: the lens's top "
                 "word)", fontsize=10)


def lens_positions(T: int, max_rows: int = LENS_ROWS) -> range:
    """The rows of a lens grid: every position if there are at most max_rows, else every k-th, k = ⌈T / max_rows⌉."""
    return range(0, T, max(1, math.ceil(T / max_rows)))


PROBABILITY_FLOOR = 1e-3  # the lens grid's colour scale: log p from 10⁻³ to 1, the same for every model


def lens_grid_figure(lens: "LensResult", words: Sequence[str], decode: Callable[[int], str], batch: int = 0, *,
                     positions: Sequence[int] | None = None, max_rows: int = LENS_ROWS,
                     next_ranks: "Tensor | np.ndarray | None" = None,
                     points: str = r"$\mathrm{LN}_f(x_l)$") -> "Figure":
    """Positions × layers: the logit lens's top word per cell, whole, shaded by its probability (bold = final pick);
    beside it, when next_ranks [L+1, T−1] (lens.next_word_ranks) is given, the rank of the text's own next word.

    Probability is coloured on one logarithmic scale from PROBABILITY_FLOOR to 1 for every model, so that the
    low probabilities of a small or weak model stay visible and two grids can be compared; ranks likewise from
    1 to the vocabulary. Rows are `positions` (default: lens_positions(T, max_rows), every k-th position of a
    long text, so that the figure stays about a page tall); draw pages with positions=range(start, start +
    max_rows). Columns are as wide as the widest word, up to 1 in; a longer token is written whole in a
    smaller font. `points` is the mathtext of what ln_f makes of x_l (sphere.map_label), for the title."""
    from matplotlib.colors import LogNorm

    T = len(words)
    rows = list(lens_positions(T, max_rows) if positions is None else positions)
    n_states = lens.n_states
    probs = lens.top_probs[:, batch, rows, 0].T.float().cpu().numpy()  # [R, L+1]
    top = lens.top_ids[:, batch, rows, 0].T.cpu().numpy()  # [R, L+1]
    final = lens.prediction[batch, rows].cpu().numpy()  # [R]
    labels = [[word_label(decode(int(i))) for i in row] for row in top]
    width = cell_width(label for row in labels for label in row)
    rank_width = 0.3 * n_states + 1.6 if next_ranks is not None else 0.0
    fig = new_figure(2.6 + width * n_states + 1.2 + rank_width, 1.6 + 0.2 * len(rows))
    if next_ranks is not None:
        ax, rank_ax = fig.subplots(1, 2, width_ratios=[width * n_states + 1.2, rank_width])
    else:
        ax = fig.add_subplot()
    image = ax.imshow(np.maximum(probs, PROBABILITY_FLOOR), norm=LogNorm(PROBABILITY_FLOOR, 1.0), cmap="Blues",
                      aspect="auto", interpolation="nearest")
    write_cells(ax, labels, width, white=probs > 0.25, bold=top == final[:, None])  # Blues is dark from p ≈ 0.25
    ax.set_xticks(range(n_states))
    ax.set_xlabel(r"layer $l$ (0 = embedding)")
    ax.set_yticks(range(len(rows)), [f"{t}: {word_label(words[t])}" for t in rows], fontsize=CELL_FONT)
    ax.set_ylabel(r"position $t$: token")
    shown = f"all {T} positions" if len(rows) == T else f"positions {', '.join(map(str, rows[:3]))}, … of {T}"
    ax.set_title(f"logit lens: top word of {points}" + r"$\,E^\top$" + f" ({shown})\n"
                 "bold = the model's final prediction", fontsize=10)
    shrink = min(1.0, 0.3 + 12 / len(rows))  # a bar of about 6 in beside a long grid, as tall as a short one
    fig.colorbar(image, ax=ax, shrink=shrink, extend="min", label=r"probability $p_l$ of the top word (log scale)")
    if next_ranks is not None:
        ranks = as_array(next_ranks).T  # [T−1, L+1]
        shown_ranks = np.full((len(rows), n_states), np.nan)  # the last position has no next word: grey
        for r, t in enumerate(rows):
            if t < ranks.shape[0]:
                shown_ranks[r] = ranks[t]
        ranked = rank_ax.imshow(shown_ranks, norm=LogNorm(1, max(10.0, float(np.nanmax(ranks, initial=10.0)))),
                                cmap=with_masked("viridis_r"), aspect="auto", interpolation="nearest")
        rank_ax.set_xticks(range(n_states))
        rank_ax.set_yticks(range(len(rows)), [""] * len(rows))
        rank_ax.set_xlabel(r"layer $l$")
        rank_ax.set_ylabel("the text's next word")
        rank_ax.set_title("its rank in $p_l$\n(1 = top; grey: none)", fontsize=10)
        fig.colorbar(ranked, ax=rank_ax, shrink=shrink, label="rank (log scale)")
    return fig


def attention_figure(pattern: "Tensor | np.ndarray", words: Sequence[str], layer: int, head: int, *,
                     log_scale: bool | None = None) -> "Figure":
    """One head's causal attention pattern a_ij [T, T]: query rows, key columns.

    Keys after their query (j > i), which the head cannot see, are grey, unlike weights that are merely 0.
    log_scale colours by a LogNorm from a hundredth of the uniform weight 1/T (rounded down to a power of
    ten) to 1, so that the many small weights of a long text stay visible; smaller weights take the lowest
    colour. Default: logarithmic past 64 tokens, linear up to them."""
    from matplotlib.colors import LogNorm, Normalize

    weights = as_array(pattern)
    T = len(words)
    if weights.shape != (T, T):
        raise ValueError(f"pattern of shape {weights.shape} does not match {T} words")
    weights = np.where(np.tri(T, dtype=bool), weights, np.nan)  # NaN above the diagonal: masked keys
    log_scale = T > 64 if log_scale is None else log_scale
    if log_scale:
        floor = 10.0 ** math.floor(math.log10(0.01 / T))
        norm, scale = LogNorm(vmin=floor, vmax=1.0), "log scale"
    else:
        norm, scale = Normalize(vmin=0.0, vmax=1.0), "linear scale"
    side = min(max(4.0 + 0.04 * T, 6.0), 11.0)  # inches of heatmap: 6 up to 50 tokens, 11 from 175
    fig = new_figure(side + 3.2, side + 2.4)
    ax = fig.add_subplot()
    # LogNorm masks a weight of exactly 0 like a NaN: lift it below the floor (the lowest colour); NaN stays grey
    image = ax.imshow(np.maximum(weights, norm.vmin / 10) if log_scale else weights, norm=norm,
                      cmap=with_masked("magma", under=log_scale), interpolation="nearest")
    ticks = thinned(T)
    labels = [f"{t} {word_label(words[t])}" for t in ticks]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=6.5)
    ax.set_yticks(ticks, labels, fontsize=6.5)
    ax.set_xlabel(r"key position $j$")
    ax.set_ylabel(r"query position $i$")
    ax.set_title(f"attention pattern $a_{{ij}}$, layer {layer} head {head} ({scale})")
    fig.colorbar(image, ax=ax, shrink=0.7, label=r"attention weight $a_{ij}$", extend="min" if log_scale else "neither")
    ax.legend(handles=[masked_patch("key after the query (masked)")], loc="upper right", fontsize=8)
    return fig


def norm_profile_figure(trace: "Trace", batch: int = 0, *, variant: "NormVariant | None" = None) -> "Figure":
    """Across layers: ‖x_l‖ and the updates' norms (left); what each norm site sees and makes (right).

    `variant` is the blocks' norm (default: GPT-2's layer norm): the line at √d, the radius of a sphere
    projection, is drawn only for a variant that reads direction alone (geometry.scale_free)."""
    from matplotlib.collections import LineCollection

    take = lambda t: t[:, batch].float().cpu().numpy()  # noqa: E731  [L, B, T] -> [L, T]
    residual = np.concatenate([take(trace.residual.residual_norm), trace.ln_f.input_norm[batch].float().cpu().numpy()[None]])
    L, T = residual.shape[0] - 1, residual.shape[1]
    d = trace.states.shape[-1] if trace.states is not None else None
    fig = new_figure(13, 5.5)
    panels = fig.subfigures(1, 2)
    left, right = (panel.subplots() for panel in panels)
    paths = np.stack([np.broadcast_to(np.arange(L + 1)[:, None], residual.shape), residual], axis=-1)  # [L+1, T, 2]
    left.add_collection(LineCollection(list(paths.transpose(1, 0, 2)), colors="0.6", linewidths=0.7, alpha=fade(T),
                                       label=rf"$\|x_l\|$ of each of the {T} tokens"))
    left.plot(np.arange(L + 1), residual.mean(axis=1), color="black", linewidth=2, label=r"$\|x_l\|$, mean over tokens")
    blocks = np.arange(L) + 0.5  # an update sits between x_l and x_l+1
    left.plot(blocks, take(trace.residual.attention_update_norm).mean(axis=1), "o-", label="‖attention update‖, mean")
    left.plot(blocks, take(trace.residual.mlp_update_norm).mean(axis=1), "s-", label="‖MLP update‖, mean")
    left.set_yscale("log")
    left.set_xlabel(r"layer $l$ (0 = embedding)")
    left.set_ylabel("norm (log scale)")
    integer_x(left)
    left.set_title("residual stream")
    panels[0].legend(loc="outside lower center", ncols=2, fontsize=9)
    layers = np.arange(L)
    for site, marker in (("ln_1", "o"), ("ln_2", "s")):
        record = getattr(trace, site)
        right.plot(layers, take(record.output_norm).mean(axis=1), marker + "-",
                   label=site + r": $\|\gamma\odot\hat{x}+\beta\|$ (output)")
        right.plot(layers, take(record.radius).mean(axis=1), marker + "--", label=site + r": $\|\hat{x}\|$ (radius)")
        right.plot(layers, np.abs(take(record.mean_component)).mean(axis=1), marker + ":",
                   label=site + r": $|x\cdot\mathbf{1}/\sqrt{d}|$ (distance from $H$)")
    right.plot([L], [trace.ln_f.output_norm[batch].float().mean().item()], "k*", markersize=12, label=r"ln_f: $\|\gamma\odot\hat{x}+\beta\|$")
    if d is not None and (variant is None or variant.geometry.scale_free):
        right.axhline(math.sqrt(d), color="grey", linewidth=0.8, label=rf"$\sqrt{{d}}$ = {math.sqrt(d):.1f}")
    right.set_yscale("log")
    right.set_xlabel(r"layer $l$ (block index; ln_f after the last)")
    right.set_ylabel("norm, mean over tokens (log scale)")
    integer_x(right)
    right.set_title("norm sites" + (f" ({variant.name})" if variant is not None else ""))
    panels[1].legend(loc="outside lower center", ncols=2, fontsize=9)
    return fig


def drift_label(result: "DriftResult") -> str:
    """Mathtext of the drift, without its $ signs: the model's own ln_f map of x_l[t], dotted with e_{t+1} − e_t."""
    return result.state_map.strip("$") + r"\cdot(e_{t+1}-e_t)"


VISIBLE_BAND = 0.01  # a ± standard-error band narrower than this share of the y range is not drawn


def drift_figure(result: "DriftResult") -> "Figure":
    """Per layer: mean drift ± its standard error (left); mean log p of next and current word (right), if known.

    The band is drawn, and named in the legend, only when it is wide enough to see (VISIBLE_BAND of the axis);
    otherwise the legend gives the largest standard error in numbers."""
    layers = np.arange(len(result.drift))
    panels = 2 if result.logp_next is not None else 1
    fig = new_figure(6 * panels, 4.5)
    axes = np.atleast_1d(fig.subplots(1, panels))
    sem = result.drift_std / np.sqrt(max(result.positions, 1))
    axes[0].plot(layers, result.drift, "o-", color="tab:blue", label=f"mean over {result.positions} positions")
    span = max(np.ptp(np.append(result.drift, 0.0)), np.finfo(float).tiny)
    if sem.max() >= VISIBLE_BAND * span:
        axes[0].fill_between(layers, result.drift - sem, result.drift + sem, alpha=0.3, color="tab:blue",
                             label="± standard error")
    else:
        axes[0].plot([], [], " ", label=f"standard error ≤ {sem.max():.2g} (too small to draw)")
    axes[0].axhline(0.0, color="grey", linewidth=0.8)
    axes[0].set_ylabel(f"drift ${drift_label(result)}$")
    axes[0].set_title("drift towards the next word", fontsize=10)
    axes[0].legend(fontsize=8)
    if panels == 2:
        axes[1].plot(layers, result.logp_next, "o-", label=r"$\log p_l(w_{t+1})$, the next word")
        axes[1].plot(layers, result.logp_current, "s-", label=r"$\log p_l(w_t)$, the current word")
        axes[1].set_ylabel("mean log-probability (nats)")
        axes[1].set_title("logit lens of the two words", fontsize=10)
        axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel(r"layer $l$ (0 = embedding)")
        integer_x(ax)
    return fig


def drift_position_figure(result: "DriftResult") -> "Figure":
    """Layers × positions: the mean drift at each position of a window, on one colour scale for every layer.

    One symmetric scale, ± the 99th percentile of |drift| over all cells (beyond it the end colours, the bar
    extended), so that layers can be compared; a layer of small drift is pale because its drift is small.
    With few windows each column is the mean over few tokens, and its stripes are those tokens' identity,
    not a property of the position: the title gives the number of windows averaged."""
    from matplotlib.colors import Normalize

    by_position = result.drift_by_position  # [L+1, P]
    n_states, P = by_position.shape
    limit = float(np.percentile(np.abs(by_position), 99)) or float(np.abs(by_position).max()) or 1.0
    fig = new_figure(min(max(5.0 + 0.015 * P, 7.0), 14.0), 1.8 + 0.32 * n_states)
    ax = fig.add_subplot()
    image = ax.imshow(by_position, cmap="RdBu_r", norm=Normalize(-limit, limit), aspect="auto", interpolation="nearest")
    ax.set_xlabel(r"position $t$ in the window")
    ax.set_ylabel(r"layer $l$")
    ax.set_yticks(range(n_states))
    windows = f"{result.windows} window" + ("s" if result.windows != 1 else "")
    ax.set_title(f"mean ${drift_label(result)}$ by position, over {windows}", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.9, extend="both", label="drift (red: towards the next word)")
    return fig


# ---- the weight analyses ------------------------------------------------------------------------------------

def singular_values_figure(spectra: Mapping[int, "Tensor"], title: str = "", *, circuit: str = "QK") -> "Figure":
    """One small panel per head: its singular values σ_r of W_{circuit} on a log axis (black), every other head of
    the layer behind it in grey, all panels on the same axes; each names r₉₀, the number of singular values
    that hold 90 % of Σσ (the cumulative share, read as one number).

    spectra: head -> singular values [r], largest first (svd.head_svd(...).singular_values)."""
    heads = list(spectra)
    values = {head: as_array(spectra[head]) for head in heads}
    columns = min(4, len(heads))
    lines = math.ceil(len(heads) / columns)
    fig = new_figure(2.6 * columns + 0.6, 2.1 * lines + 0.9)
    axes = fig.subplots(lines, columns, squeeze=False, sharex=True, sharey=True)
    positive = np.concatenate([v[v > 0] for v in values.values()])
    positive = positive if positive.size else np.ones(1)  # all zero: any range will do
    for ax in axes.flat[len(heads):]:
        ax.remove()
    for ax, head in zip(axes.flat, heads):
        for other in heads:
            if other != head:
                ax.plot(np.arange(1, len(values[other]) + 1), values[other], color="0.8", linewidth=0.8)
        mine = values[head]
        ax.plot(np.arange(1, len(mine) + 1), mine, color="black", linewidth=1.6)
        share = np.cumsum(mine) / max(mine.sum(), np.finfo(float).tiny)
        r90 = int(np.searchsorted(share, 0.9) + 1)
        ax.text(0.97, 0.93, f"$r_{{90}} = {r90}$", transform=ax.transAxes, ha="right", va="top", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylim(positive.min() / 2, positive.max() * 2)
        ax.set_title(f"head {head}", fontsize=9)
        ax.grid(alpha=0.3)
    fig.supxlabel(r"rank $r$ of the singular value", fontsize=10)  # shared axes: one label for all panels
    fig.supylabel(r"singular value $\sigma_r$ (log scale)", fontsize=10)
    fig.suptitle(title or f"singular values of $W_{{{circuit}}}$ per head (grey: the other heads)", fontsize=10)
    return fig


MEASURE_MATH = {  # embeddings.MEASURES in mathtext: e is the word's embedding, γ and β ln_f's
    "norm": r"$\|e\|$",
    "scaled_norm": r"$\|\gamma\odot e\|$",
    "norm_plus_bias": r"$\|e\| + \beta\cdot e$",
    "scaled_norm_plus_bias": r"$\|\gamma\odot e\| + \beta\cdot e$",
    "reach_bound": r"$\sqrt{d}\,\|\gamma\odot e\| + \beta\cdot e$",
    "tight_reach_bound": r"$\sqrt{d}\,\|\mathrm{centre}(\gamma\odot e)\| + \beta\cdot e$",
}


def reach_figure(ranked: Sequence["RankedWord"], decode: Callable[[int], str]) -> "Figure":
    """The words easiest and hardest for ln_f's output to reach: one panel per measure, its top-k words (blue)
    above its bottom-k words (red), each a dot at its value.

    ranked: embeddings.top_and_bottom's rows (measure, "top i"/"bottom i", token, value), in its order;
    decode(token) -> the token's text."""
    from matplotlib.lines import Line2D

    from .embeddings import MEASURES

    groups: dict[str, list[RankedWord]] = {}
    for row in ranked:
        groups.setdefault(row.measure, []).append(row)
    n_rows = max(len(rows) for rows in groups.values())
    columns = min(3, len(groups))
    lines = math.ceil(len(groups) / columns)
    fig = new_figure(4.3 * columns, 0.9 + lines * (1.0 + 0.2 * n_rows))
    axes = list(fig.subplots(lines, columns, squeeze=False).flat)
    for ax in axes[len(groups):]:  # the grid's unused places
        ax.remove()
    for ax, (measure, rows) in zip(axes, groups.items()):
        y = np.arange(len(rows))[::-1]  # the first row (top 1) at the top
        top = np.array([row.position.startswith("top") for row in rows])
        values = np.array([row.value for row in rows])
        ax.plot(values[top], y[top], "o", color="tab:blue")
        ax.plot(values[~top], y[~top], "o", color="tab:red")
        if top.any() and (~top).any():
            ax.axhline(y[top].min() - 0.5, color="grey", linewidth=0.6, linestyle="--")
        ax.set_yticks(y, [short_label(decode(row.token)) for row in rows], fontsize=CELL_FONT)
        ax.set_xlabel(MEASURE_MATH.get(measure, MEASURES.get(measure, measure)))
        ax.set_ylabel("word")
        ax.set_title(MEASURE_MATH.get(measure, measure), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(r"words ranked by how far $\mathrm{ln}_f$'s output can reach them ($e$: the word's embedding)")
    fig.legend(handles=[Line2D([], [], marker="o", linestyle="", color="tab:blue", label="top k: easiest to reach"),
                        Line2D([], [], marker="o", linestyle="", color="tab:red", label="bottom k: hardest to reach")],
               loc="outside lower center", ncols=2)
    return fig


def probe_figure(rows: Sequence["ProbeRow"], decode: Callable[[int], str], *, max_words: int = 30) -> "Figure":
    """Probed words × heads: each head's best match for each word, written whole, shaded by its score.

    rows: probe.probe_blocks's ProbeRow records, any blocks and probes: one panel per (block, probe), one
    under another, in the rows' order, each of the first max_words words (1.4 in + 0.2 in a word tall: one
    block's two probes of 30 words make a page, 14 in wide with 12 heads). The Σ column is the block's heads
    summed: its word is written but left grey, its scale not being a single head's.
    decode(token) -> the token's text."""
    from .probe import KEY_VALUE

    every_word = list(dict.fromkeys(row.word for row in rows))
    words = every_word[:max_words]
    rows = [row for row in rows if row.word in words]
    groups: dict[tuple[int, str], list[ProbeRow]] = {}
    for row in rows:
        groups.setdefault((row.layer, row.probe), []).append(row)
    heads = sorted({row.head for row in rows if row.head is not None}) + [None]
    width = cell_width((short_label(decode(row.matches[0])) for row in rows), widest=0.85)
    fig = new_figure(2.2 + width * len(heads) + 1.4, len(groups) * (1.4 + 0.2 * len(words)))
    axes = np.atleast_1d(fig.subplots(len(groups), 1))
    for ax, ((layer, probe), group) in zip(axes, groups.items()):
        scores = np.full((len(words), len(heads)), np.nan)
        labels = [[""] * len(heads) for _ in words]
        for row in group:
            r, c = words.index(row.word), heads.index(row.head)
            labels[r][c] = short_label(decode(row.matches[0]))
            if row.head is not None:
                scores[r, c] = row.scores[0]
        image = ax.imshow(scores, cmap=with_masked("viridis"), aspect="auto", interpolation="nearest")
        low, high = np.nanmin(scores), np.nanmax(scores)
        write_cells(ax, labels, width, white=scores < low + 0.4 * (high - low))  # viridis is dark when low
        ax.set_xticks(range(len(heads)), [str(h) if h is not None else "Σ" for h in heads])
        ax.set_yticks(range(len(words)), [short_label(w) for w in words], fontsize=CELL_FONT)
        ax.set_xlabel(r"head $h$ ($\Sigma$ = all heads summed, not shaded)")
        ax.set_ylabel("probed word $n$")
        what = (r"its logit in $\mathrm{ln}_f(E_n + u_h + b_O)\,E^\top$" if probe == KEY_VALUE
                else r"its score $\tilde{E}_n W_{QK}^h \tilde{E}_j^\top$")
        some = f" (the first {len(words)} of {len(every_word)} words)" if len(words) < len(every_word) else ""
        ax.set_title(f"block {layer}, {probe}: each head's best match for each word{some}\nshaded by {what}",
                     fontsize=10)
        fig.colorbar(image, ax=ax, label="logit" if probe == KEY_VALUE else "score")
    return fig


QK_SCORE = r"$s(q, k) = \hat{x}_q W_{QK} \hat{x}_k^\top$"


def qk_pairs_figure(pairs: Sequence["WordPair"], decode: Callable[[int], str], *, layer: int | None = None,
                    head: int | None = None, max_pairs: int = 40) -> "Figure":
    """A head's strongest query-key word pairs: their scores by rank (left) and, when they have at least two
    query words and two key words, as a query × key map of square cells (right).

    pairs: qk.strongest_pairs's WordPair records, best first; the first max_pairs are drawn. In the map a grey
    cell is a pair outside them; when one query word holds every pair the map would be a single row and is left
    out (the list says it all). decode(token) -> the token's text; layer, head name the head in the title."""
    from matplotlib.colors import Normalize

    shown = list(pairs[:max_pairs])
    scores = np.array([p.score for p in shown])
    queries = list(dict.fromkeys(p.query for p in shown))
    keys = list(dict.fromkeys(p.key for p in shown))
    rows = len(shown)
    with_map = len(queries) >= 2 and len(keys) >= 2
    cell = 0.22  # inches a side
    map_width = 2.6 + cell * len(keys) if with_map else 0.0
    height = 1.6 + max(0.2 * rows, (1.6 + cell * len(queries)) if with_map else 0.0, 1.4)
    fig = new_figure(5.2 + map_width, height)
    if with_map:
        ranks, matrix = fig.subplots(1, 2, width_ratios=[5.2, map_width])
    else:
        ranks = fig.add_subplot()
    y = np.arange(rows)[::-1]
    ranks.plot(scores, y, "o", color="tab:purple")
    ranks.set_yticks(y, [f"{short_label(decode(p.query))} → {short_label(decode(p.key))}" for p in shown],
                     fontsize=CELL_FONT)
    ranks.set_xlabel(r"score $s(q, k)$")
    ranks.set_ylabel(r"query $q$ → key $k$, best first")
    ranks.grid(axis="x", alpha=0.3)
    ranks.set_title(f"the {rows} strongest pairs" + (f" of {len(pairs)}" if len(pairs) > rows else ""), fontsize=10)
    if with_map:
        grid = np.full((len(queries), len(keys)), np.nan)
        for p in shown:
            grid[queries.index(p.query), keys.index(p.key)] = p.score
        image = matrix.imshow(grid, cmap=with_masked("viridis"), norm=Normalize(scores.min(), scores.max()),
                              aspect="equal", interpolation="nearest")
        matrix.set_xticks(range(len(keys)), [short_label(decode(k)) for k in keys], rotation=90, fontsize=CELL_FONT)
        matrix.set_yticks(range(len(queries)), [short_label(decode(q)) for q in queries], fontsize=CELL_FONT)
        matrix.set_xlabel(r"key word $k$")
        matrix.set_ylabel(r"query word $q$")
        matrix.set_title("by query and key\n(grey: not among them)", fontsize=10)
        fig.colorbar(image, ax=matrix, shrink=0.6, label=r"score $s(q, k)$")
    head_name = f"block {layer}, head {head}: " if layer is not None and head is not None else ""
    fig.suptitle(f"{head_name}strongest query-key word pairs, {QK_SCORE}", fontsize=11)
    return fig


def compare_figure(comparison: "Comparison") -> "Figure":
    """Models side by side (analysis.compare): per layer, ‖x_l‖, the radius of the site that reads x_l, the
    angular path and KL(p_L ‖ p_l), each a mean over the text's positions, one line per model; and every
    model's paths in one 3-D PCA frame, the highlighted word bold. KL is 0 at the last layer by definition:
    that point is not drawn on the log axis (nothing is drawn that was not measured as a positive value).
    The 3-D view draws the highlighted word's path alone: every token of every model would hide it."""
    rows = comparison.rows
    names = list(dict.fromkeys(row["model"] for row in rows))
    panels = (("residual_norm", r"$\|x_l\|$, mean over tokens", "log"),
              ("radius", r"$\|\hat{x}_l\|$ at the site reading $x_l$", "log"),
              ("angular_path", r"angular path $\sum_{k \leq l} \theta_k$ (rad)", "linear"),
              ("kl_to_final", r"$\mathrm{KL}(p_L \,\|\, p_l)$ (nats)", "log"))
    fig = new_figure(15, 12 if comparison.paths else 4.8)
    grid = fig.add_gridspec(2, 4, height_ratios=[1, 1.7]) if comparison.paths else fig.add_gridspec(1, 4)
    from matplotlib import colormaps

    colours = [colormaps["tab10"](i % 10) for i in range(len(names))]
    styles = ["-", "--", "-.", ":"]  # models that coincide (a source against itself) still show every line
    for column, (field, label, scale) in enumerate(panels):
        ax = fig.add_subplot(grid[0, column])
        for i, name in enumerate(names):
            mine = [row for row in rows if row["model"] == name]
            layers = np.array([row["layer"] for row in mine])
            values = np.array([row[field] for row in mine])
            keep = values > 0 if scale == "log" else np.ones(len(values), bool)  # log axes: measured positives
            ax.plot(layers[keep], values[keep], "osd^v<>"[i % 7] + styles[i % 4], color=colours[i],
                    label=name, markersize=5, alpha=0.9)
        ax.set_yscale(scale)
        ax.set_xlabel(r"layer $l$ (0 = embedding)")
        ax.set_ylabel(label)
        integer_x(ax)
    if comparison.paths:
        ax = fig.add_subplot(grid[1, :], projection="3d", computed_zorder=False)
        h = comparison.highlight
        for i, paths in enumerate(comparison.paths):
            path = paths.coords[:, h]  # [L+1, 3]: the highlighted word, layer by layer
            ax.plot(*path.T, "o" + styles[i % 4], color=colours[i], linewidth=2.2, markersize=4, label=paths.label)
            ax.scatter(*path[0], marker="s", s=60, color=colours[i], edgecolor="black", depthshade=False)
            ax.scatter(*path[-1], marker="^", s=80, color=colours[i], edgecolor="black", depthshade=False)
        explained = comparison.explained_variance
        for i, set_label in enumerate((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel)):
            set_label(f"PC{i + 1} ({100 * float(explained[i]):.1f} % var.)")
        ax.set_box_aspect(None, zoom=0.9)
        ax.set_title(rf"$\mathrm{{ln}}_f(x_l)$ of {word_label(comparison.words[h])} in every model, one PCA "
                     r"fitted on all their tokens; ■ layer 0, ▲ last layer", fontsize=10)
        fig.legend(*ax.get_legend_handles_labels(), loc="center left", bbox_to_anchor=(0.0, 0.42), fontsize=8,
                   title="model (its geometry)", alignment="left")  # beside the 3-D box, in figure coordinates
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(len(names), 4))
    return fig
