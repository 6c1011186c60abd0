"""Figures of the weight analyses: singular values (experiment 3), the words ln_f lets the output reach
(experiment 1), the probes (experiment 2) and a head's strongest query-key pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .labels import CELL_FONT, cell_width, short_label, write_cells
from .style import as_array, integer_x, new_figure, with_masked

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import Tensor

    from ..embeddings import RankedWord
    from ..probe import ProbeRow
    from ..qk import WordPair


def singular_values_figure(spectra: Mapping[int, "Tensor"], title: str = "", *, circuit: str = "QK") -> "Figure":
    """One small panel per head: its singular values σ_r of W_{circuit} on a log axis (black), every other head of
    the layer behind it in grey, all panels on the same axes; each names r₉₀, the number of singular values
    that hold 90 % of Σσ (the cumulative share, read as one number).

    spectra: head -> singular values [r], largest first (svd.head_svd(...).singular_values)."""
    heads = list(spectra)
    values = {head: as_array(spectra[head]) for head in heads}
    columns = min(4, len(heads))
    lines = math.ceil(len(heads) / columns)
    fig = new_figure(max(2.6 * columns + 0.6, 5.6), 2.1 * lines + 1.2)  # one head: still room for the title
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
        integer_x(ax)  # ranks are whole numbers
    fig.supxlabel(r"rank $r$ of the singular value", fontsize=10)  # shared axes: one label for all panels
    fig.supylabel(r"singular value $\sigma_r$ (log scale)", fontsize=10)
    key = r"$r_{90}$: how many of the largest $\sigma_r$ hold 90 % of $\Sigma_r\,\sigma_r$"
    if len(heads) > 1:
        key += "; grey: the layer's other heads"
    fig.suptitle(f"{title or f'singular values of $W_{{{circuit}}}$ per head'}\n{key}", fontsize=10)
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

    from ..embeddings import MEASURES

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
    from ..probe import KEY_VALUE

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
