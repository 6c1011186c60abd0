"""One head's attention pattern over the text, query by key.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .labels import word_label
from .style import as_array, masked_patch, new_figure, thinned, with_masked

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import Tensor


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
