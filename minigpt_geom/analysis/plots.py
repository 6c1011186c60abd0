"""Figures of the trajectory analyses, drawn from results computed elsewhere (matplotlib, PNG).

Each `*_figure` function takes computed data and returns a `matplotlib.figure.Figure`; `save_figure`
writes it and `figure_png` gives its PNG bytes. Figures are built without pyplot (no global state, no
GUI backend), and matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from torch import Tensor

    from ..trace import Trace
    from .drift import DriftResult
    from .lens import LensResult
    from .trajectory import Trajectory


def new_figure(width: float, height: float) -> "Figure":
    """An empty figure of width × height inches (imports matplotlib, with a clear error if it is missing)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        from ..errors import MiniGPTGeomError

        raise MiniGPTGeomError("plots need matplotlib: pip install 'minigpt-geom[plot]'") from None
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: "Figure", path: str | Path, dpi: int = 100) -> Path:
    """Write the figure as a PNG file."""
    fig.savefig(str(path), dpi=dpi, format="png")
    return Path(path)


def figure_png(fig: "Figure", dpi: int = 100) -> bytes:
    """The figure as PNG bytes (for embedding in a page)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    return buffer.getvalue()


def word_label(word: str) -> str:
    """A token quoted as Python shows it (' one', '\\n'), `$` escaped so it is not read as mathtext."""
    return repr(word).replace("$", r"\$")


def integer_layers(ax: Axes) -> None:
    """Ticks only at whole layer numbers on the x axis."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def trajectory_figure(trajectory: "Trajectory") -> "Figure":
    """Every word's path LN_f(x_0) → LN_f(x_L) in 3-D; the highlighted word in red, its prediction a star."""
    fig = new_figure(8, 7)
    ax = fig.add_subplot(projection="3d")
    coords = trajectory.coords  # [L+1, T, 3]
    L1, T, _ = coords.shape
    for t in range(T):
        if t != trajectory.highlight:
            ax.plot(*coords[:, t].T, color="0.6", linewidth=0.7, alpha=0.6)
    layers = np.repeat(np.arange(L1), T)
    points = ax.scatter(*coords.reshape(-1, 3).T, c=layers, cmap="viridis", s=12, depthshade=False)
    path = coords[:, trajectory.highlight]  # [L+1, 3]
    ax.plot(*path.T, color="crimson", linewidth=2.5, marker="o", markersize=4)
    ax.text(*path[0], f"  {word_label(trajectory.words[trajectory.highlight])} (layer 0)", color="crimson", fontsize=10)
    ax.text(*path[-1], f"  layer {L1 - 1}", color="crimson", fontsize=9)
    ax.scatter(*trajectory.prediction_coord, marker="*", s=250, color="orange", edgecolor="black", depthshade=False)
    ax.text(*trajectory.prediction_coord, f"  {word_label(trajectory.prediction_word)} (predicted)", fontsize=10)
    ax.set_xlabel("1")
    ax.set_ylabel("2")
    ax.set_zlabel("3")
    ax.set_title(f"LN_f(x_l) of every token, layers 0–{L1 - 1} ({trajectory.method.upper()}); "
                 f"{word_label(trajectory.words[trajectory.highlight])} in red", fontsize=11)
    fig.colorbar(points, ax=ax, shrink=0.6, label="layer")
    return fig


def lens_grid_figure(lens: "LensResult", words: Sequence[str], decode: Callable[[int], str], batch: int = 0) -> "Figure":
    """Positions × layers: the logit lens's top word per cell, coloured by its probability (bold = final pick)."""
    L1 = lens.n_layers
    T = len(words)
    probs = lens.top_probs[:, batch, :, 0].T.float().cpu().numpy()  # [T, L+1]
    top = lens.top_ids[:, batch, :, 0].T.cpu().numpy()  # [T, L+1]
    final = lens.prediction[batch].cpu().numpy()  # [T]
    fig = new_figure(2.0 + 0.85 * L1, 1.2 + 0.26 * T)
    ax = fig.add_subplot()
    image = ax.imshow(probs, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for t in range(T):
        for layer in range(L1):
            ax.text(layer, t, word_label(decode(int(top[t, layer])))[:10], ha="center", va="center", fontsize=6.5,
                    color="white" if probs[t, layer] > 0.6 else "black",
                    fontweight="bold" if top[t, layer] == final[t] else "normal")
    ax.set_xticks(range(L1))
    ax.set_xlabel("layer (0 = embedding)")
    ax.set_yticks(range(T), [f"{t}: {word_label(w)}" for t, w in enumerate(words)], fontsize=7)
    ax.set_title("logit lens: top word of LN_f(x_l) Eᵀ\n(bold = the final prediction)", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.5, label="probability")
    return fig


def attention_figure(pattern: Tensor | np.ndarray, words: Sequence[str], layer: int, head: int) -> "Figure":
    """One head's attention pattern a_ij [T, T]: query rows, key columns."""
    if hasattr(pattern, "cpu"):  # a tensor, maybe bfloat16, which NumPy cannot read
        pattern = pattern.detach().float().cpu().numpy()
    pattern = np.asarray(pattern, dtype=np.float64)
    T = len(words)
    size = min(4.0 + 0.22 * T, 16.0)
    fig = new_figure(size + 1.2, size)
    ax = fig.add_subplot()
    image = ax.imshow(pattern, cmap="magma", vmin=0.0, vmax=1.0)
    step = max(1, math.ceil(T / 40))  # at most ~40 tick labels per axis
    labels = [word_label(w) for w in words]
    ax.set_xticks(range(0, T, step), labels[::step], rotation=90, fontsize=7)
    ax.set_yticks(range(0, T, step), labels[::step], fontsize=7)
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
    ax.set_title(f"attention pattern a_ij, layer {layer} head {head}")
    fig.colorbar(image, ax=ax, shrink=0.6)
    return fig


def norm_profile_figure(trace: "Trace", batch: int = 0) -> "Figure":
    """Across layers: ‖x_l‖ and the updates' norms (left); what each layer-norm site sees and makes (right)."""
    take = lambda t: t[:, batch].float().cpu().numpy()  # noqa: E731  [L, B, T] -> [L, T]
    residual = np.concatenate([take(trace.residual.residual_norm), trace.ln_f.input_norm[batch].float().cpu().numpy()[None]])
    L = residual.shape[0] - 1
    d = trace.states.shape[-1] if trace.states is not None else None
    fig = new_figure(12, 4.5)
    left, right = fig.subplots(1, 2)
    left.plot(np.arange(L + 1), residual, color="0.75", linewidth=0.7)
    left.plot(np.arange(L + 1), residual.mean(axis=1), color="black", linewidth=2, label="‖x_l‖ (mean; grey: tokens)")
    blocks = np.arange(L) + 0.5  # an update sits between x_l and x_l+1
    left.plot(blocks, take(trace.residual.attention_update_norm).mean(axis=1), "o-", label="‖attention update‖")
    left.plot(blocks, take(trace.residual.mlp_update_norm).mean(axis=1), "s-", label="‖MLP update‖")
    left.set_yscale("log")
    left.set_xlabel("layer")
    integer_layers(left)
    left.set_title("residual stream")
    left.legend(fontsize=8)
    layers = np.arange(L)
    for site, marker in (("ln_1", "o"), ("ln_2", "s")):
        record = getattr(trace, site)
        right.plot(layers, take(record.radius).mean(axis=1), marker + "--", label=f"{site} radius after centring+normalising")
        right.plot(layers, take(record.output_norm).mean(axis=1), marker + "-", label=f"{site} ‖γ⊙·+β‖")
        right.plot(layers, np.abs(take(record.mean_component)).mean(axis=1), marker + ":",
                   label=f"{site} |x·1/√d| (distance from H)")
    right.plot([L], [trace.ln_f.output_norm[batch].float().mean().item()], "k*", markersize=12, label="ln_f ‖γ⊙·+β‖")
    if d is not None:
        right.axhline(math.sqrt(d), color="grey", linewidth=0.8, label=f"√d = {math.sqrt(d):.1f}")
    right.set_yscale("log")
    right.set_xlabel("layer")
    integer_layers(right)
    right.set_title("layer-norm sites (means over tokens)")
    right.legend(fontsize=6.5)
    return fig


def drift_figure(result: "DriftResult") -> "Figure":
    """Per layer: mean drift ± standard error (left); mean log p of next and current word (right), if known."""
    layers = np.arange(len(result.drift))
    panels = 2 if result.logp_next is not None else 1
    fig = new_figure(6 * panels, 4.2)
    axes = np.atleast_1d(fig.subplots(1, panels))
    sem = result.drift_std / np.sqrt(result.positions)
    axes[0].plot(layers, result.drift, "o-", color="tab:blue")
    axes[0].fill_between(layers, result.drift - sem, result.drift + sem, alpha=0.3, color="tab:blue")
    axes[0].axhline(0.0, color="grey", linewidth=0.8)
    axes[0].set_xlabel("layer (0 = embedding)")
    integer_layers(axes[0])
    axes[0].set_ylabel("LN_f(x_l[t]) · (e_{t+1} − e_t)")
    axes[0].set_title(f"drift towards the next word ({result.positions} positions)")
    if panels == 2:
        axes[1].plot(layers, result.logp_next, "o-", label="log p_l(next word)")
        axes[1].plot(layers, result.logp_current, "s-", label="log p_l(current word)")
        axes[1].set_xlabel("layer (0 = embedding)")
        integer_layers(axes[1])
        axes[1].set_ylabel("mean log-probability (logit lens)")
        axes[1].legend()
    return fig


def drift_position_figure(result: "DriftResult") -> "Figure":
    """Layers × positions: the mean drift at each position of a window, red towards the next word, blue away."""
    by_position = result.drift_by_position  # [L+1, P]
    L1, P = by_position.shape
    limit = float(np.abs(by_position).max()) or 1.0  # a colour scale symmetric about 0
    fig = new_figure(min(4.0 + 0.05 * P, 16.0), 1.5 + 0.3 * L1)
    ax = fig.add_subplot()
    image = ax.imshow(by_position, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    ax.set_xlabel("position t in the window")
    ax.set_ylabel("layer (0 = embedding)")
    ax.set_yticks(range(L1))
    ax.set_title(f"mean LN_f(x_l[t]) · (e_{{t+1}} − e_t) by position ({result.windows} windows)", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="drift")
    return fig
