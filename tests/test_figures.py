"""Every figure of analysis/plots.py, drawn from the real analyses of a 150-token text with CJK and emoji tokens.

Each figure is read back through matplotlib's own objects (titles, axis labels, colour bars, legends, the
image arrays) and written with warnings turned into errors (a missing glyph warns); the files are decoded
to check the requested dpi and format. NumPy recomputes what the figures summarise."""

from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import torch
from bpe_files import SAMPLE, write_vocab
from conftest import random_hf_model, save_official_layout
from matplotlib.colors import LogNorm
from matplotlib.image import imread

from minigpt_geom import GPT2
from minigpt_geom.analysis import plots
from minigpt_geom.analysis.drift import text_drift
from minigpt_geom.analysis.embeddings import reachability, top_and_bottom
from minigpt_geom.analysis.lens import logit_lens
from minigpt_geom.analysis.text import token_words
from minigpt_geom.analysis.probe import probe_layers
from minigpt_geom.analysis.qk import strongest_pairs
from minigpt_geom.analysis.svd import cumulative_share, head_svd
from minigpt_geom.analysis.trajectory import ln_f_points, word_trajectory
from minigpt_geom.errors import InputError
from minigpt_geom.tokenizer import Tokenizer
from minigpt_geom.trace import TraceRequest

SHAPE = dict(n_layer=2, n_head=12, n_embd=48, n_positions=160, vocab_size=300)  # 12 heads: more than 10 colours
TOKENS = 150
EXOTIC = (" 世界", "🙂", "日本語 ✓")  # CJK and emoji: not in DejaVu Sans, matplotlib's only bundled font


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """A random 12-head model with a real tokenizer, and every analysis the figures draw, of a 150-token text."""
    folder = tmp_path_factory.mktemp("figures")
    assert write_vocab(folder, SHAPE["vocab_size"] - 257) == SHAPE["vocab_size"]
    save_official_layout(random_hf_model(seed=5, **SHAPE), folder)
    model, tokenizer = GPT2.from_pretrained(folder).eval(), Tokenizer.from_pretrained(folder)
    ids = tokenizer.encode(SAMPLE * 2)[:TOKENS]
    assert len(ids) == TOKENS
    words = token_words(tokenizer, ids)
    words[3], words[10] = EXOTIC[0], EXOTIC[1]

    def decode(token: int) -> str:  # every 7th token id reads as CJK or emoji
        return EXOTIC[token % 3] if token % 7 == 0 else tokenizer.decode([token])

    with torch.inference_mode():
        _, trace = model(torch.tensor([ids]), trace=TraceRequest(states=True, patterns=True))
        lens = logit_lens(model, trace)
        trajectory = word_trajectory(model, trace.states, words, lens.prediction[0].tolist(), decode, highlight=3)
        drift = text_drift(model, ids, trace.states)
        shares = {h: cumulative_share(head_svd(model, 1, h, "QK").singular_values) for h in range(SHAPE["n_head"])}
        probed = [(decode(t), t) for t in (7, 14, 40, 41, 100)]
        probes = probe_layers(model, [1], probed, k=3)
        pairs = strongest_pairs(model, 1, 2, k=30)
        ranked = top_and_bottom(reachability(model), k=4)
    return dict(model=model, ids=ids, words=words, decode=decode, trace=trace, lens=lens, trajectory=trajectory,
                drift=drift, shares=shares, probes=probes, pairs=pairs, ranked=ranked)


def numpy_explained_variance(model: GPT2, states: torch.Tensor) -> np.ndarray:
    """Share of the variance of all LN_f(x_l) points along the top 3 principal axes, by NumPy's SVD."""
    with torch.inference_mode():
        points = ln_f_points(model, states[:, 0]).reshape(-1, states.shape[-1]).double().numpy()
    s = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    return (s**2 / (s**2).sum())[:3]


FIGURES = {  # name -> (draw from data, what explains its colours)
    "trajectory": (lambda d: plots.trajectory_figure(d["trajectory"]), {"colorbar", "legend"}),
    "lens_grid": (lambda d: plots.lens_grid_figure(d["lens"], d["words"], d["decode"]), {"colorbar"}),
    "attention": (lambda d: plots.attention_figure(d["trace"].attention.pattern[1, 0, 5], d["words"], 1, 5),
                  {"colorbar", "legend"}),
    "attention_linear": (lambda d: plots.attention_figure(d["trace"].attention.pattern[0, 0, 0], d["words"], 0, 0,
                                                          log_scale=False), {"colorbar", "legend"}),
    "norms": (lambda d: plots.norm_profile_figure(d["trace"]), {"legend"}),
    "drift": (lambda d: plots.drift_figure(d["drift"]), {"legend"}),
    "drift_by_position": (lambda d: plots.drift_position_figure(d["drift"]), {"colorbar"}),
    "singular_values": (lambda d: plots.singular_values_figure(d["shares"]), {"colorbar"}),
    "reach": (lambda d: plots.reach_figure(d["ranked"], d["decode"]), {"legend"}),
    "probe": (lambda d: plots.probe_figure(d["probes"], d["decode"]), {"colorbar"}),
    "qk_pairs": (lambda d: plots.qk_pairs_figure(d["pairs"], d["decode"], layer=1, head=2), {"colorbar"}),
}


def is_colorbar(ax) -> bool:
    return hasattr(ax, "_colorbar")


def legends(fig) -> list:
    """Every legend of the figure: on its axes, on it, on its subfigures."""
    found = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    return found + [legend for sub in fig.subfigs for legend in sub.legends]


def check_labelled(fig, colours: set[str]) -> None:
    """Every plotting axes has axis labels and a title (its own or the figure's); colours are explained."""
    plotting = [ax for ax in fig.axes if not is_colorbar(ax) and ax.get_visible()]
    assert plotting
    for ax in plotting:
        assert ax.get_xlabel() and ax.get_ylabel(), ax
        if hasattr(ax, "get_zlabel"):
            assert ax.get_zlabel()
        assert ax.get_title() or fig.get_suptitle(), ax
    bars = [ax for ax in fig.axes if is_colorbar(ax)]
    if "colorbar" in colours:
        assert bars and all(bar.get_ylabel() or bar.get_xlabel() for bar in bars)
    if "legend" in colours:
        assert legends(fig) and all(legend.get_texts() for legend in legends(fig))


def saved(fig, path: Path, **options) -> Path:
    """save_figure with every warning an error (a glyph the font lacks warns while drawing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return plots.save_figure(fig, path, **options)


def drawn(name: str, data: dict):
    """The named figure, drawn with every warning an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return FIGURES[name][0](data)


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_is_labelled_warning_free_and_written_at_the_dpi(name, data, tmp_path):
    fig = drawn(name, data)
    check_labelled(fig, FIGURES[name][1])
    width, height = fig.get_size_inches()
    path = saved(fig, tmp_path / f"{name}.png", dpi=40)
    assert imread(path).shape[:2] == (int(height * 40), int(width * 40))  # matplotlib rounds down
    assert width <= 16 and height <= 16  # about a page, at 150 tokens as at any length


@pytest.mark.parametrize("fmt", ["svg", "pdf"])
def test_vector_formats_with_cjk_and_emoji_tokens(fmt, data, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plots.lens_grid_figure(data["lens"], data["words"], data["decode"], positions=range(12))
    texts = [label.get_text() for label in fig.axes[0].get_yticklabels()] + [text.get_text() for text in fig.axes[0].texts]
    assert any("\\u4e16" in text for text in texts) and any("\\U0001f642" in text for text in texts)  # drawn
    width, height = fig.get_size_inches()
    path = saved(fig, tmp_path / "lens.figure", format=fmt)  # the format argument wins over the suffix
    if fmt == "svg":
        root = ElementTree.parse(path).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert float(root.get("width").removesuffix("pt")) == pytest.approx(width * 72)
    else:
        assert path.read_bytes().startswith(b"%PDF") and b"%%EOF" in path.read_bytes()[-32:]
        assert f"/MediaBox [ 0 0 {width * 72:g} {height * 72:g} ]".encode() in path.read_bytes()


def test_word_label_escapes_only_what_the_font_cannot_draw():
    from matplotlib.font_manager import FontProperties, findfont
    from matplotlib.ft2font import FT2Font

    charmap = FT2Font(findfont(FontProperties())).get_charmap()  # the bundled DejaVu Sans
    assert ord("世") not in charmap and ord("é") in charmap
    assert plots.word_label(" 世界") == "' \\u4e16\\u754c'"
    assert plots.word_label("🙂") == "'\\U0001f642'"
    assert plots.word_label(" café\n") == "' café\\n'"
    assert plots.word_label("$x$") == "'\\$x\\$'"  # not mathtext


def test_a_raw_cjk_label_would_fail_these_tests(tmp_path):
    fig = plots.new_figure(2, 1)
    fig.suptitle("世界")  # not through word_label: DejaVu Sans has no glyph, matplotlib warns while drawing
    with pytest.raises(UserWarning, match="missing from font"):
        saved(fig, tmp_path / "raw.png")


def test_pca_axes_carry_the_explained_variance(data):
    share = numpy_explained_variance(data["model"], data["trace"].states)
    fig = plots.trajectory_figure(data["trajectory"], explained_variance=share)
    ax = fig.axes[0]
    assert [ax.get_xlabel(), ax.get_ylabel(), ax.get_zlabel()] == [
        f"PC{i + 1} ({100 * share[i]:.1f} % var.)" for i in range(3)]
    legend = " ".join(text.get_text() for text in legends(fig)[0].get_texts())
    assert "\\u4e16" in legend  # the highlighted word " 世界" is named in the legend, not on the plot
    assert not ax.texts


def test_lens_grid_shows_whole_words_of_every_kth_position_or_a_page(data):
    lens, words, decode = data["lens"], data["words"], data["decode"]
    fig = plots.lens_grid_figure(lens, words, decode)
    rows = list(range(0, TOKENS, 3))  # ⌈150 / 64⌉ = 3
    ax = fig.axes[0]
    assert [label.get_text() for label in ax.get_yticklabels()] == [
        f"{t}: {plots.word_label(words[t])}" for t in rows]
    top = lens.top_ids[:, 0, :, 0].numpy()  # [L+1, T]
    expected = [plots.word_label(decode(int(top[layer, t]))) for t in rows for layer in range(lens.n_states)]
    assert [text.get_text() for text in ax.texts] == expected  # whole: not cut at any length
    page = plots.lens_grid_figure(lens, words, decode, positions=range(64, 128))
    assert page.axes[0].get_yticklabels()[0].get_text().startswith("64: ") and len(page.axes[0].texts) == 64 * 3


def test_attention_masks_future_keys_apart_from_zero_weights(data):
    pattern = data["trace"].attention.pattern[1, 0, 5].clone()
    pattern[10, 0] = 0.0  # a visible key with no weight
    for log_scale in (True, False):
        image = plots.attention_figure(pattern, data["words"], 1, 5, log_scale=log_scale).axes[0].images[0]
        shown = image.get_array()
        assert np.array_equal(np.ma.getmaskarray(shown), np.triu(np.ones((TOKENS, TOKENS), bool), k=1))
        assert not np.ma.is_masked(shown[10, 0])
        assert isinstance(image.norm, LogNorm) == log_scale
        if log_scale:  # below the scale: drawn in its lowest colour, not the masked grey
            assert shown[10, 0] < image.norm.vmin
            assert not np.array_equal(image.cmap.get_under(), image.cmap.get_bad())
    default = plots.attention_figure(pattern, data["words"], 1, 5).axes[0].images[0]
    assert isinstance(default.norm, LogNorm) and default.norm.vmin == pytest.approx(1e-5)  # 0.01 / 150 -> 1e-5


def test_drift_by_position_scales_each_layer_by_its_own_largest_drift(data):
    drift = data["drift"].drift_by_position  # [L+1, P]
    ax = plots.drift_position_figure(data["drift"]).axes[0]
    shown = np.asarray(ax.images[0].get_array())
    largest = np.abs(drift).max(axis=1)
    np.testing.assert_allclose(shown, drift / largest[:, None])
    assert [label.get_text() for label in ax.get_yticklabels()] == [
        f"{layer} (±{s:.3g})" for layer, s in enumerate(largest)]


def test_probe_figure_writes_each_heads_best_match_and_leaves_the_sum_unshaded(data):
    rows = data["probes"]
    fig = plots.probe_figure(rows, data["decode"], max_words=3)
    assert len([ax for ax in fig.axes if not is_colorbar(ax)]) == 2  # block 1: query-key, then key-value
    ax = fig.axes[0]
    words = list(dict.fromkeys(row.word for row in rows))[:3]
    assert [label.get_text() for label in ax.get_yticklabels()] == [plots.word_label(w) for w in words]
    assert "first 3 of 5 words" in ax.get_title()
    query_key = {(row.word, row.head): row for row in rows if row.probe == "query-key"}
    texts = iter(ax.texts)
    shown = np.ma.getdata(ax.images[0].get_array())
    for r, word in enumerate(words):
        for c, head in enumerate([*range(SHAPE["n_head"]), None]):
            assert next(texts).get_text() == plots.word_label(data["decode"](query_key[word, head].matches[0]))
            if head is None:
                assert np.isnan(shown[r, c])
            else:
                assert shown[r, c] == pytest.approx(max(query_key[word, head].scores))


def test_twelve_heads_get_twelve_distinct_colours(data):
    fig = plots.singular_values_figure(data["shares"])
    colours = {tuple(line.get_color()) for line in fig.axes[0].lines}
    assert len(colours) == SHAPE["n_head"]
    ticks = [label.get_text() for label in fig.axes[1].get_yticklabels()]
    assert ticks == [str(h) for h in range(SHAPE["n_head"])]


@pytest.mark.slow
def test_save_figure_rejects_unknown_formats_and_replaces_atomically(data, tmp_path):
    for path, options in ((tmp_path / "figure.gif", {}), (tmp_path / "figure.png", {"format": "jpeg"}),
                          (tmp_path / "figure", {}), (tmp_path / "figure.png", {"dpi": 0})):
        with pytest.raises(InputError):
            plots.save_figure(drawn("drift", data), path, **options)
    target = tmp_path / "drift.png"
    target.write_bytes(b"old")
    saved(drawn("drift", data), target)
    assert imread(target).shape[:2] == (675, 1800)  # 12 × 4.5 in at the default 150 dpi
    assert os.listdir(tmp_path) == ["drift.png"]  # no temporary left beside it
    for fmt in ("svg", "pdf"):  # no date, fixed ids: the same figure gives the same file
        first, second = (saved(drawn("drift", data), tmp_path / f"drift{i}.{fmt}").read_bytes() for i in (1, 2))
        assert first == second
