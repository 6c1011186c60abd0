"""Models side by side: residual norm, radius, angular path and the lens's KL per layer, and their paths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .labels import math_text, word_label, wrapped
from .style import integer_x, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..compare import Comparison


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
    paths = comparison.paths
    fig = new_figure(15, 9.6 if paths else 4.8)
    grid = fig.add_gridspec(2, 4, height_ratios=[1, 1.5]) if paths else fig.add_gridspec(1, 4)
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
    handles = fig.axes[0].get_legend_handles_labels()[0]
    if not paths:
        fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 4))
        return fig
    ax = fig.add_subplot(grid[1, :2], projection="3d", computed_zorder=False)
    h = comparison.highlight
    for i, model in enumerate(paths):
        path = model.coords[:, h]  # [L+1, 3]: the highlighted word, layer by layer
        ax.plot(*path.T, "o" + styles[i % 4], color=colours[i], linewidth=2.2, markersize=4)
        ax.scatter(*path[0], marker="s", s=60, color=colours[i], edgecolor="black", depthshade=False)
        ax.scatter(*path[-1], marker="^", s=80, color=colours[i], edgecolor="black", depthshade=False)
    explained = comparison.explained_variance
    for i, set_label in enumerate((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel)):
        set_label(f"PC{i + 1} ({100 * float(explained[i]):.1f} % var.)")
    ax.set_box_aspect(None, zoom=0.9)
    ax.set_title(rf"$\mathrm{{ln}}_f(x_l)$ of {word_label(comparison.words[h])} in every model, one PCA "
                 r"fitted on all their tokens; ■ layer 0, ▲ last layer", fontsize=10)
    key = fig.add_subplot(grid[1, 2:])  # one legend for every panel, in the place beside the 3-D box
    key.axis("off")
    key.legend(handles, [wrapped(math_text(model.label), 52) for model in paths], loc="center left",
               title="model (its geometry): the same line in every panel", alignment="left", fontsize=9,
               frameon=False)
    return fig
