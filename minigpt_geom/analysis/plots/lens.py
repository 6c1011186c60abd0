"""The logit lens's grid: every residual state decoded as if it were the last, one cell per layer and position.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .labels import CELL_FONT, cell_width, word_label, write_cells
from .style import as_array, new_figure, with_masked

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import Tensor

    from ..lens import LensResult

LENS_ROWS = 64  # positions in one lens grid: about a page at 7 pt


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
    smaller font. `points` is the mathtext of what ln_f makes of x_l (variants.map_label), for the title."""
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
