"""Every figure of analysis/plots/, drawn from the real analyses of a 150-token text with CJK and emoji tokens.

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
from helpers import needs, write_random_checkpoint

needs("matplotlib")  # every test here draws
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from minigpt_geom import GPT2
from minigpt_geom.analysis import plots
from minigpt_geom.analysis.drift import text_drift
from minigpt_geom.analysis.embeddings import reachability, top_and_bottom
from minigpt_geom.analysis.lens import logit_lens, next_word_ranks
from minigpt_geom.analysis.text import token_words
from minigpt_geom.analysis.probe import probe_layers
from minigpt_geom.analysis.qk import strongest_pairs
from minigpt_geom.analysis.svd import head_svd
from minigpt_geom.analysis.trajectory import ln_f_points, word_trajectory
from minigpt_geom.errors import InputError
from minigpt_geom.text.tokenizer import Tokenizer
from minigpt_geom.model.trace import TraceRequest

SHAPE = dict(n_layer=2, n_head=12, n_embd=48, n_positions=160, vocab_size=300)  # 12 heads: more than 10 colours
TOKENS = 150
EXOTIC = (" 世界", "🙂", "日本語 ✓")  # CJK and emoji: not in DejaVu Sans, matplotlib's only bundled font


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """A random 12-head model with a real tokenizer, and every analysis the figures draw, of a 150-token text."""
    folder = tmp_path_factory.mktemp("figures")
    assert write_vocab(folder, SHAPE["vocab_size"] - 257) == SHAPE["vocab_size"]
    write_random_checkpoint(folder, seed=5, **SHAPE)
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
        spectra = {h: head_svd(model, 1, h, "QK").singular_values for h in range(SHAPE["n_head"])}
        next_ranks = next_word_ranks(model, trace.states[:, 0], ids)
        path_words = [decode(int(i)) for i in lens.top_ids[:, 0, 3, 0]]
        probed = [(decode(t), t) for t in (7, 14, 40, 41, 100)]
        probes = probe_layers(model, [1], probed, k=3)
        pairs = strongest_pairs(model, 1, 2, k=30)
        ranked = top_and_bottom(reachability(model), k=4)
    return dict(model=model, tokenizer=tokenizer, ids=ids, words=words, decode=decode, trace=trace, lens=lens,
                trajectory=trajectory,
                drift=drift, spectra=spectra, probes=probes, pairs=pairs, ranked=ranked, next_ranks=next_ranks,
                path_words=path_words)


def numpy_explained_variance(model: GPT2, states: torch.Tensor) -> np.ndarray:
    """Share of the variance of all LN_f(x_l) points along the top 3 principal axes, by NumPy's SVD."""
    with torch.inference_mode():
        points = ln_f_points(model, states[:, 0]).reshape(-1, states.shape[-1]).double().numpy()
    s = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    return (s**2 / (s**2).sum())[:3]


FIGURES = {  # name -> (draw from data, what explains its colours)
    "trajectory": (lambda d: plots.trajectory_figure(d["trajectory"], path_words=d["path_words"]),
                   {"colorbar", "legend"}),
    "lens_grid": (lambda d: plots.lens_grid_figure(d["lens"], d["words"], d["decode"], next_ranks=d["next_ranks"]),
                  {"colorbar"}),
    "attention": (lambda d: plots.attention_figure(d["trace"].attention.pattern[1, 0, 5], d["words"], 1, 5),
                  {"colorbar", "legend"}),
    "attention_linear": (lambda d: plots.attention_figure(d["trace"].attention.pattern[0, 0, 0], d["words"], 0, 0,
                                                          log_scale=False), {"colorbar", "legend"}),
    "norms": (lambda d: plots.norm_profile_figure(d["trace"]), {"legend"}),
    "drift": (lambda d: plots.drift_figure(d["drift"]), {"legend"}),
    "drift_by_position": (lambda d: plots.drift_position_figure(d["drift"]), {"colorbar"}),
    "singular_values": (lambda d: plots.singular_values_figure(d["spectra"]), set()),
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
        assert (ax.get_xlabel() or fig.get_supxlabel()) and (ax.get_ylabel() or fig.get_supylabel()), ax
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


def test_drift_by_position_draws_every_layer_on_one_symmetric_scale(data):
    drift = data["drift"].drift_by_position  # [L+1, P]
    ax = plots.drift_position_figure(data["drift"]).axes[0]
    image = ax.images[0]
    np.testing.assert_allclose(np.asarray(image.get_array()), drift)  # raw drift: no layer rescaled
    limit = np.percentile(np.abs(drift), 99)
    assert (image.norm.vmin, image.norm.vmax) == pytest.approx((-limit, limit))
    assert [label.get_text() for label in ax.get_yticklabels()] == [str(layer) for layer in range(len(drift))]
    assert "$" in ax.get_title()  # the drift written as rendered maths


def test_drift_band_only_when_visible_and_labels_in_mathtext(data):
    from dataclasses import replace

    from matplotlib.collections import PolyCollection

    def bands(result):
        ax = plots.drift_figure(result).axes[0]
        labels = [text.get_text() for text in ax.get_legend().get_texts()]
        return [c for c in ax.collections if isinstance(c, PolyCollection)], labels, ax

    drift = data["drift"]
    wide = replace(drift, drift_std=np.full_like(drift.drift_std, np.ptp(drift.drift) * 10), positions=4)
    polys, labels, ax = bands(wide)
    assert len(polys) == 1 and "± standard error" in labels
    invisible = replace(drift, drift_std=drift.drift_std * 0 + 1e-6 * np.ptp(drift.drift), positions=15_000)
    polys, labels, ax = bands(invisible)
    assert polys == [] and not any(label == "± standard error" for label in labels)
    assert any("too small to draw" in label for label in labels)
    assert ax.get_ylabel().count("$") == 2 and "e_{t+1}" in ax.get_ylabel()


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


def test_singular_values_one_panel_per_head_on_shared_log_axes(data):
    spectra = data["spectra"]
    fig = plots.singular_values_figure(spectra)
    panels = fig.axes
    assert len(panels) == SHAPE["n_head"]
    assert len({ax.get_ylim() for ax in panels}) == 1 and all(ax.get_yscale() == "log" for ax in panels)
    for head, ax in enumerate(panels):
        black = [line for line in ax.lines if line.get_color() == "black"]
        assert len(black) == 1 and len(ax.lines) == SHAPE["n_head"]  # the head, the 11 others in grey behind
        s = spectra[head].double().numpy()
        np.testing.assert_allclose(black[0].get_ydata(), s)
        r90 = int(np.argmax(np.cumsum(s) / s.sum() >= 0.9)) + 1
        assert ax.texts[0].get_text() == f"$r_{{90}} = {r90}$"
        assert ax.get_title() == f"head {head}"


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


# ---- properties of the figures a paper shows (issue 18) ---------------------------------------------------

def test_trajectory_writes_the_lens_words_along_the_path_and_the_approach_beside_it(data):
    trajectory = data["trajectory"]
    fig = plots.trajectory_figure(trajectory, path_words=data["path_words"])
    ax3d, approach = [ax for ax in fig.axes if hasattr(ax, "get_zlabel")][0], fig.axes[-1]
    written = [text.get_text() for text in ax3d.texts]  # every layer once, with its word, on one line or a run's
    assert layers_written(written) == {layer: plots.short_label(w) for layer, w in enumerate(data["path_words"])}
    # the companion panel: cos(LN_f(x_l), e_pred) per layer, recomputed with torch's own layer norm
    model, h = data["model"], trajectory.highlight
    ln_f = model.ln_f
    states = data["trace"].states[:, 0, h].double()
    points = torch.nn.functional.layer_norm(states, states.shape[-1:], ln_f.weight.double(), ln_f.bias.double(),
                                            ln_f.eps).detach().numpy()
    e = model.wte.weight[trajectory.prediction_id].double().detach().numpy()
    cosine = points @ e / np.linalg.norm(points, axis=1) / np.linalg.norm(e)
    np.testing.assert_allclose(approach.lines[0].get_ydata(), cosine, rtol=1e-6)
    assert [t.get_text() for t in approach.texts] == [plots.short_label(w) for w in data["path_words"]]
    assert "$" in approach.get_ylabel() and "$" in ax3d.get_title()


def layers_written(labels: list[str]) -> dict[int, str]:
    """layer -> word, from labels whose lines read " 3: w" or " 2–4: w"."""
    found = {}
    for line in (line for label in labels for line in label.split("\n")):
        layers, word = line.strip().split(": ", 1)
        first, _, last = layers.partition("–")
        for layer in range(int(first), int(last or first) + 1):
            assert layer not in found, labels
            found[layer] = word
    return found


PILED = np.array([[5.0, 5.0, 5.0], [0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.2, 0.0], [0.1, 0.1, 0.1], [3.0, 0, 0]])
PILED_WORDS = ["'x'", "' of'", "'.'", "'.'", "'.'", "'.'"]


def test_labels_of_layers_that_pile_up_are_written_once_per_run():
    """Issue 28: layers 1–4 of a trained model sit in one spot; their labels, one per layer, piled up unreadable."""
    labels = plots.path_labels(PILED, PILED_WORDS, near=0.5)
    assert labels == [(0, " 0: 'x'"), (1, " 1: ' of'\n 2–4: '.'"), (5, " 5: '.'")]
    assert plots.path_labels(PILED, PILED_WORDS, near=0.0) == [(l, f" {l}: {w}") for l, w in enumerate(PILED_WORDS)]


@pytest.mark.subprocess
def test_the_reports_3d_view_groups_its_labels_as_the_figure_does():
    """The report's JavaScript pathLabels (on screen points) gives the labels of plots.path_labels."""
    import json
    import shutil
    import subprocess
    from importlib import resources

    if shutil.which("node") is None:
        pytest.skip("needs node to run the report's JavaScript")
    template = resources.files("minigpt_geom.analysis").joinpath("report_template.html").read_text(encoding="utf-8")
    start = template.index("  function pathLabels(")
    source = template[start:template.index("\n  }\n", start) + 4]
    points = PILED[:, :2].tolist()  # the screen: two coordinates
    script = f"{source}\nconsole.log(JSON.stringify(pathLabels({json.dumps(points)}, {json.dumps(PILED_WORDS)}, 0.5)));"
    done = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    expected = plots.path_labels(np.c_[PILED[:, :2], np.zeros(len(PILED))], PILED_WORDS, near=0.5)
    assert json.loads(done.stdout) == [[layer, [line.strip() for line in text.split("\n")]] for layer, text in expected]


def test_drift_figures_give_the_unit_of_the_drift(data):
    """Drift is log p(next) − log p(current): a difference of log-probabilities, in nats."""
    assert plots.drift_figure(data["drift"]).axes[0].get_ylabel().endswith("(nats)")
    bar = plots.drift_position_figure(data["drift"]).axes[-1]
    assert bar.get_ylabel().startswith("drift, nats")


@pytest.mark.subprocess
def test_the_reports_3d_box_holds_what_is_drawn():
    """Issue 28: the 3-D view was a small cluster in a large box, its frame stretched to every position's
    predicted word, though only the chosen word's is drawn. The frame now holds the states and that one word."""
    import json
    import shutil
    import subprocess
    from importlib import resources

    if shutil.which("node") is None:
        pytest.skip("needs node to run the report's JavaScript")
    template = resources.files("minigpt_geom.analysis").joinpath("report_template.html").read_text(encoding="utf-8")
    source = template[template.index("  let all = [], centre"):template.index("  frame();\n")]
    data = {"coords": [[[0, 0, 0], [1, 1, 1]], [[1, 0, 1], [0, 1, 0]]],  # [L+1][T][3]: a unit cube of states
            "predictionCoords": [[0.5, 0.5, 0.5], [100, 100, 100]]}  # position 1 predicts a word far away
    script = (f"const data = {json.dumps(data)}; const state = {{word: 0}};\n{source}\nframe();\n"
              "const first = spread.slice(); state.word = 1; frame();\nconsole.log(JSON.stringify([first, spread]));")
    done = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    chosen_near, chosen_far = json.loads(done.stdout)
    assert chosen_near == [0.5, 0.5, 0.5]  # the cube's own half-width: the far word, not drawn, plays no part
    assert min(chosen_far) > 50  # once that word is chosen (and drawn), the box holds it


def test_one_head_svd_figure_explains_r90_and_keeps_its_title_inside(data):
    fig = plots.singular_values_figure({1: data["spectra"][1]}, "singular values of $W_{QK}$ per head, layer 1")
    title = fig._suptitle.get_text()
    assert "$r_{90}$: how many of the largest" in title and "grey" not in title  # no other head is drawn
    assert "grey: the layer's other heads" in plots.singular_values_figure(data["spectra"])._suptitle.get_text()
    fig.canvas.draw()
    box, inside = fig._suptitle.get_window_extent(), fig.bbox
    assert box.x0 >= inside.x0 and box.x1 <= inside.x1  # not cut at either edge
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())  # ranks are whole numbers


def test_compare_figure_has_one_legend_and_maths_for_powers(data):
    from minigpt_geom.analysis.compare import compare_models

    model = data["model"]
    tokenizer = data["tokenizer"]
    comparison = compare_models({"layernorm": model, "dyt": model.with_norm("dyt"), "none": model.with_norm("none")},
                                tokenizer, "To kill two birds with one stone")
    fig = plots.compare_figure(comparison)
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    assert len(legends) == 1  # one key for every panel
    texts = [t.get_text() for t in legends[0].get_texts()]
    assert any("$^{d}$" in t for t in texts) and not any("^d" in t.replace("$^{d}$", "") for t in texts)
    assert all((row["kl_to_final"] >= 0) for row in comparison.rows)  # KL ≥ 0: rounding is clamped


@pytest.mark.parametrize("variant, shown, absent", [("layernorm", r"\mathrm{LN}_{f}(x_l)", None),
                                                     ("none", "$x_l$", "LN"),
                                                     ("dyt", r"\mathrm{DyT}_{f}(x_l)", "LN")])
def test_trajectory_title_names_the_models_own_final_norm(data, variant, shown, absent):
    model = data["model"].with_norm({"ln_f": variant})
    assert model.ln_f.variant.name == variant
    trajectory = word_trajectory(model, data["trace"].states, data["words"], data["lens"].prediction[0].tolist(),
                                 data["decode"], highlight=3)
    fig = plots.trajectory_figure(trajectory)
    title = fig.axes[0].get_title()
    assert shown in title and (absent is None or absent not in title)


def test_lens_grid_has_one_log_scale_for_every_model_and_the_next_words_rank(data):
    lens, words, decode, ranks = data["lens"], data["words"], data["decode"], data["next_ranks"]
    fig = plots.lens_grid_figure(lens, words, decode, positions=range(TOKENS - 10, TOKENS), next_ranks=ranks)
    grid, rank_ax = [ax for ax in fig.axes if not is_colorbar(ax)]
    norm = grid.images[0].norm
    assert isinstance(norm, LogNorm) and (norm.vmin, norm.vmax) == (plots.PROBABILITY_FLOOR, 1.0)
    # the rank of the text's next word, brute force from every layer's lens logits
    model, states = data["model"], data["trace"].states[:, 0]
    with torch.inference_mode():
        logits = model.unembed(model.ln_f(states)[0]).double().numpy()  # [L+1, T, V]
    ids = np.array(data["ids"])
    expected = np.array([[(logits[l, t] > logits[l, t, ids[t + 1]]).sum() + 1 for l in range(lens.n_states)]
                         for t in range(TOKENS - 10, TOKENS - 1)])
    shown = rank_ax.images[0].get_array()
    np.testing.assert_array_equal(np.ma.getdata(shown)[:-1], expected)
    assert np.ma.getmaskarray(shown)[-1].all()  # the last token has no next word: grey, nothing drawn
    assert grid.get_xlabel().count("$") == 2 and "$" in grid.get_title()


def test_long_tokens_are_cut_in_cells_and_ticks_and_reach_titles_are_maths(data):
    long = "=" * 64

    def decode(token: int) -> str:
        return long if token % 2 == 0 else data["decode"](token)

    for fig in (plots.probe_figure(data["probes"], decode), plots.qk_pairs_figure(data["pairs"], decode),
                plots.reach_figure(data["ranked"], decode)):
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        texts += [t.get_text() for ax in fig.axes for t in ax.get_yticklabels() + ax.get_xticklabels()]
        assert not any(long in text for text in texts)
        assert any("…" in text and "(64 chars)" in text for text in texts)
    reach = plots.reach_figure(data["ranked"], data["decode"])
    titles = [ax.get_title() for ax in reach.axes]
    assert titles and all(title.startswith("$") and title.endswith("$") for title in titles)  # rendered maths
    assert not any("tight_reach_bound" in title or "scaled_norm" in title for title in titles)


def test_qk_map_is_left_out_when_one_query_holds_every_pair(data):
    from minigpt_geom.analysis.qk import WordPair

    one_query = [WordPair(5, key, 1.0 - 0.01 * key) for key in range(20)]
    fig = plots.qk_pairs_figure(one_query, data["decode"])
    assert len(fig.axes) == 1 and not fig.axes[0].images  # the list alone, no one-row map
    fig = plots.qk_pairs_figure(data["pairs"], data["decode"])
    matrix = [ax for ax in fig.axes if ax.images][0]
    assert matrix.get_aspect() == 1.0  # square cells, however many query words


def test_norms_draw_the_sqrt_d_line_only_for_a_variant_that_has_that_radius(data):
    def labels(variant):
        fig = plots.norm_profile_figure(data["trace"], variant=variant)
        return [text.get_text() for legend in legends(fig) for text in legend.get_texts()]

    from minigpt_geom.model.variants import get_norm

    assert any(label.startswith(r"$\sqrt{d}$") for label in labels(get_norm("layernorm")))
    assert not any("sqrt{d}$ =" in label for label in labels(get_norm("dyt")) + labels(get_norm("none")))
