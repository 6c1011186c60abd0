"""Experiment 5's figures: drift towards the next word per layer, and per layer and position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .style import integer_x, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..drift import DriftResult


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
    axes[0].set_ylabel(f"drift ${drift_label(result)}$ (nats)")  # a difference of two log-probabilities
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
    fig.colorbar(image, ax=ax, shrink=0.9, extend="both", label="drift, nats (red: towards the next word)")
    return fig
