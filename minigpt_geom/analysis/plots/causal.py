"""Figures of the causal experiments (patching, ablation, attribution, rotation, steering), in plots.py's manner.

Each `*_figure` takes a computed result and returns a matplotlib Figure; plots.save_figure writes it. Colour
scales are fixed where results are compared: a patching map always runs from −1 to 1 in normalised units
(0 = corrupted, 1 = clean; beyond, the bar's arrows), so that two maps read alike; diverging maps are
centred on 0; numbers are written in the cells of small maps.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .labels import CELL_FONT, short_label, word_label, write_cells
from .style import as_array, new_figure, thinned

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..ablation import AblationResult
    from ..attribution import Attribution
    from ..patching import PatchingResult
    from ..rotation import RotationResult
    from ..steering import SteeringResult

METRIC_MATH = {"logit_diff": r"$z_{\mathrm{answer}} - z_{\mathrm{wrong}}$", "probability": r"$p(\mathrm{answer})$"}
NUMBERED_CELLS = 400  # maps with at most this many cells have their values written in them
COLUMN_WIDTH = 0.42  # inches a map's column takes
DIVERGING = "RdBu_r"  # red = positive (restores the answer, raises the loss), blue = negative


def symmetric_limit(values: np.ndarray) -> float:
    """The half-width of a colour scale centred on 0 that holds every finite value (1 when all are 0)."""
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max(initial=0.0)) or 1.0


def numbered_map(ax: "Axes", values: np.ndarray, limit: float):
    """A diverging map of values [R, C] on −limit … limit (0 white), each cell's value written (labels.py's
    write_cells) when the map is small. The image, for a colour bar."""
    from matplotlib.colors import Normalize

    image = ax.imshow(values, cmap=DIVERGING, norm=Normalize(-limit, limit), aspect="auto", interpolation="nearest")
    if values.size <= NUMBERED_CELLS:
        # a cell's width in inches once the colour bar (fraction 0.15 and pad 0.05 by default) takes its fifth
        width = 0.8 * ax.get_position().width * ax.figure.get_figwidth() / values.shape[1]
        write_cells(ax, [[f"{value:.2f}" for value in row] for row in values], width,
                    white=np.abs(values) > 0.6 * limit)  # RdBu is dark toward either end
    return image


def map_size(rows: int, columns: int, below: float = 0.0) -> tuple[float, float]:
    """Inches of a figure holding one map of rows × columns cells, a two-line title, `below` inches of tick labels
    under it and a colour bar, capped at a page."""
    return min(3.4 + COLUMN_WIDTH * columns, 15.0), min(2.8 + below + 0.3 * rows, 11.0)


def patching_figure(result: "PatchingResult") -> "Figure":
    """The normalised patching sweep as a map: layers down, positions (each token, clean/corrupted where they
    differ) or heads across, on one fixed scale from −1 to 1 (0 = the corrupted run, 1 = the clean run)."""
    shares = as_array(result.normalised)  # [L, T] or [L, H]
    L, C = shares.shape
    fig = new_figure(*map_size(L, C, below=1.0 if result.site == "resid_pre" else 0.0))  # tokens slanted below
    ax = fig.add_subplot()
    image = numbered_map(ax, shares, 1.0)
    ticks = thinned(C)
    if result.site == "resid_pre":
        ax.set_xticks(ticks, [f"{t}: {short_label(result.clean_words[t])}" +
                              ("" if result.clean_words[t] == result.corrupted_words[t]
                               else f"/{short_label(result.corrupted_words[t])}") for t in ticks],
                      rotation=60, ha="right", rotation_mode="anchor", fontsize=CELL_FONT)
        ax.set_xlabel(r"position $t$: clean token (/corrupted, where they differ)")
        ax.set_ylabel(r"layer $l$ (patched $x_l$, the input of block $l$)")
        what = r"residual stream $x_l[t]$"
    else:
        ax.set_xticks(ticks, [str(h) for h in ticks])
        ax.set_xlabel(r"head $h$ (its output $z_l^h$ before $W_O$, every position)")
        ax.set_ylabel(r"layer $l$")
        what = r"head outputs $z_l^h$"
    ax.set_yticks(thinned(L))
    metric = METRIC_MATH[result.contrast.metric]
    wrong = f" − {word_label(result.wrong_word)}" if result.contrast.metric == "logit_diff" else ""
    ax.set_title(f"activation patching of the {what}, clean into corrupted\n{metric} for "
                 f"{word_label(result.answer_word)}{wrong}: clean {result.clean:.3g}, corrupted {result.corrupted:.3g}",
                 fontsize=10)
    extend = ("both" if shares.min() < -1 and shares.max() > 1 else "min" if shares.min() < -1
              else "max" if shares.max() > 1 else "neither")
    fig.colorbar(image, ax=ax, shrink=0.9, extend=extend, label="restored share of the metric\n(0 = corrupted, 1 = clean)")
    return fig


def ablation_figure(result: "AblationResult") -> "Figure":
    """The change in the metric with each head ablated: layers down, heads across, centred on 0."""
    change = as_array(result.change)  # [L, H]
    L, H = change.shape
    fig = new_figure(*map_size(L, H))
    ax = fig.add_subplot()
    image = numbered_map(ax, change, symmetric_limit(change))
    ax.set_xticks(thinned(H))
    ax.set_yticks(thinned(L))
    ax.set_xlabel(r"head $h$")
    ax.set_ylabel(r"layer $l$")
    ax.set_title(f"{result.method}-ablation of each head's output $z_l^h$: change in the {result.metric_words}\n"
                 f"(the model as it is: {result.baseline:.4g})", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.9, label=f"change in the {result.metric_words}")
    return fig


def attribution_figure(result: "Attribution") -> "Figure":
    """Direct logit attribution: one bar per component summed over a block (embeddings, each block's attention
    and MLP, the rest) beside the heads' own map; one scale in logits for both panels, centred on 0."""
    from ..attribution import layer_totals

    totals = layer_totals(result)
    heads = as_array(result.heads)  # [L, H]
    L, H = heads.shape
    labels, values = [label for label, _ in totals], np.array([value for _, value in totals])
    limit = symmetric_limit(np.concatenate([values, heads.ravel()]))
    fig = new_figure(min(4.2 + COLUMN_WIDTH * H + 4.5, 16.0), min(2.4 + 0.26 * len(totals), 12.0))
    bars, heads_ax = fig.subplots(1, 2, width_ratios=[4.5, 1.2 + COLUMN_WIDTH * H])
    y = np.arange(len(totals))[::-1]
    bars.barh(y, values, color=["tab:red" if v > 0 else "tab:blue" for v in values])
    bars.set_yticks(y, labels, fontsize=CELL_FONT)
    bars.axvline(0.0, color="black", linewidth=0.8)
    bars.set_xlim(-1.08 * limit, 1.08 * limit)
    bars.set_xlabel(r"contribution to $z_{\mathrm{answer}} - z_{\mathrm{wrong}}$ (logits)")
    bars.set_ylabel("component (in forward order)")
    bars.grid(axis="x", alpha=0.3)
    bars.set_title(f"per block (sum {result.total:.4g}; the model's own {result.logit_diff:.4g})", fontsize=10)
    image = numbered_map(heads_ax, heads, limit)
    heads_ax.set_xticks(thinned(H))
    heads_ax.set_yticks(thinned(L))
    heads_ax.set_xlabel(r"head $h$")
    heads_ax.set_ylabel(r"layer $l$")
    heads_ax.set_title(r"each head: $\gamma \odot \hat{z}_l^h W_O^h \cdot (e_a - e_w)$", fontsize=10)
    fig.colorbar(image, ax=heads_ax, shrink=0.9, label="logits")
    fig.suptitle(f"direct logit attribution of {word_label(result.answer_word)} over {word_label(result.wrong_word)} "
                 f"at position {result.position} ({word_label(result.words[result.position])}), "
                 + result.reading.replace("ln_f", r"$\mathrm{ln}_f$"), fontsize=10)
    return fig


def rotation_figure(result: "RotationResult") -> "Figure":
    """m against the angle θ a word's point is turned toward another word, one line per layer (viridis)."""
    from matplotlib import colormaps

    angles = as_array(result.angles)
    values = as_array(result.values)
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot()
    colours = colormaps["viridis"](np.linspace(0.0, 0.9, len(result.layers)))
    for i, layer in enumerate(result.layers):
        ax.plot(angles, values[i], "o-", color=colours[i], markersize=3,
                label="ln_f" if layer is None else f"block {layer}")
    ax.set_xticks([0, math.pi / 8, math.pi / 4, 3 * math.pi / 8, math.pi / 2],
                  ["0", r"$\pi/8$", r"$\pi/4$", r"$3\pi/8$", r"$\pi/2$"])
    ax.set_xlabel(r"angle $\theta$ the point is turned by (radius kept)")
    ax.set_ylabel(METRIC_MATH[result.contrast.metric] + f" for {word_label(result.answer_word)}")
    if result.contrast.metric == "probability":
        ax.set_ylim(0.0, max(1e-3, float(values.max())) * 1.05)
    ax.grid(alpha=0.3)
    ax.set_title(f"{word_label(result.words[result.position])} (position {result.position}) turned toward "
                 f"{word_label(result.toward_word)} on its {result.site} site's own set", fontsize=10)
    ax.legend(fontsize=7, ncols=max(1, math.ceil(len(result.layers) / 12)), title=f"{result.site} of")
    return fig


def steering_figure(result: "SteeringResult") -> "Figure":
    """The words whose log-probability at the first new token the steering vector raised and lowered most."""
    shifts = as_array(result.shifts)
    fig = new_figure(6.4, 1.6 + 0.22 * len(shifts))
    ax = fig.add_subplot()
    y = np.arange(len(shifts))[::-1]
    ax.barh(y, shifts, color=["tab:red" if s > 0 else "tab:blue" for s in shifts])
    ax.set_yticks(y, [short_label(w) for w in result.shifted_words], fontsize=CELL_FONT)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel(r"$\Delta \log p$ of the word as the first new token (nats)")
    ax.set_ylabel("word (raised most, then lowered most)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"ActAdd at block {result.layer}: $v = {result.coefficient:g}\\,(x_l^+ - x_l^-)$, "
                 f"{word_label(result.plus)} − {word_label(result.minus)}\n"
                 f"$\\|v\\| = {result.vector_norm:.3g}$, mean $\\|x_l\\| = {result.residual_norm:.3g}$", fontsize=10)
    return fig
