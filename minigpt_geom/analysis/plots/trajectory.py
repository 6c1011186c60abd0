"""Experiment 4's figure: a word's path LN_f(x_0), …, LN_f(x_L) in 3-D, and its approach to its prediction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from .labels import short_label, word_label
from .style import fade, integer_x, new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..trajectory import Trajectory


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
        span = np.ptp(coords.reshape(-1, 3), axis=0).max()  # the cloud's extent: what "near" means on screen
        for layer, text in path_labels(path, [short_label(w) for w in path_words], near=0.06 * span):
            ax.text(*path[layer], text, fontsize=7, color="darkred", va="top", linespacing=1.1, zorder=10,
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.75, pad=0.6))  # legible over the points
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


def path_labels(path: np.ndarray, words: Sequence[str], near: float) -> list[tuple[int, str]]:
    """One label per run of consecutive layers whose points lie within `near` of the run's first point
    (path [L+1, 3]): (the run's first layer, its text), one line per word, with the layers that read it:
    " 1: ' of'" over " 2–4: '.'". Points that close would pile their labels into one unreadable cluster."""
    runs: list[list[int]] = []
    for layer in range(len(path)):
        if runs and np.linalg.norm(path[layer] - path[runs[-1][0]]) <= near:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    labels = []
    for run in runs:
        lines: list[tuple[int, int, str]] = []  # (first layer, last layer, word) of each stretch of one word
        for layer in run:
            if lines and lines[-1][2] == words[layer]:
                lines[-1] = (lines[-1][0], layer, words[layer])
            else:
                lines.append((layer, layer, words[layer]))
        labels.append((run[0], "\n".join(f" {a}: {w}" if a == b else f" {a}–{b}: {w}" for a, b, w in lines)))
    return labels


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
