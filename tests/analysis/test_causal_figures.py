"""The causal experiments' figures, drawn from real sweeps of a random model: labelled, warning-free (CJK and emoji
tokens included), the patching map on its fixed −1 … 1 scale, every value written where the map is small."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from test_figures import EXOTIC, check_labelled, saved
from test_patching import model  # noqa: F401  (the fixture)

from minigpt_geom.analysis import plots
from minigpt_geom.analysis.ablation import AblationResult, ablate_heads
from minigpt_geom.analysis.attribution import Attribution, direct_logit_attribution, ln_f_reading
from minigpt_geom.analysis.metric import Contrast
from minigpt_geom.analysis.patching import PatchingResult, patch_sweep
from minigpt_geom.analysis.rotation import RotationResult, rotation_sweep
from minigpt_geom.analysis.steering import SteeringResult, next_word_shift, steering_vector
from minigpt_geom.model.edits import Add

CLEAN = torch.tensor([[5, 17, 42, 99, 7, 250]])
CORRUPTED = torch.tensor([[5, 17, 43, 99, 120, 250]])
CONTRAST = Contrast(3, 4)
WORDS = ("To", EXOTIC[0], " two", " birds", EXOTIC[1], " stone")


@pytest.fixture(scope="module")
def results(model):  # noqa: F811
    values, clean, corrupted, _ = patch_sweep(model, CLEAN, CORRUPTED, CONTRAST)
    corrupted_words = WORDS[:2] + (" three",) + WORDS[3:4] + (EXOTIC[2],) + WORDS[5:]
    patched = PatchingResult("resid_pre", CONTRAST, values, clean, corrupted, WORDS, corrupted_words, " Paris", " Rome")
    heads, *_ = patch_sweep(model, CLEAN, CORRUPTED, CONTRAST, site="head_out")
    by_head = PatchingResult("head_out", CONTRAST, heads, clean, corrupted, WORDS, corrupted_words, " Paris", " Rome")
    change, baseline, _ = ablate_heads(model, CLEAN, method="zero")
    ablated = AblationResult("zero", "loss", change, baseline, WORDS)
    embeddings, heads_dla, bias, mlps, rest, m = direct_logit_attribution(model, CLEAN, CONTRAST)
    attributed = Attribution(embeddings, heads_dla.float(), bias.float(), mlps.float(), rest, m, WORDS, " Paris",
                             EXOTIC[0], 5, ln_f_reading(model.ln_f))
    probability = Contrast(3, 4, "probability")
    angles, turned, _ = rotation_sweep(model, CLEAN, model.unembedding_rows()[9], probability, steps=5)
    rotated = RotationResult("ln_1", (0, 1), angles, turned, probability, WORDS, 5, " one", " Paris")
    vector = steering_vector(model, CORRUPTED, CLEAN, 1)
    ids, shifts = next_word_shift(model, CLEAN, Add("resid_pre", layer=1, vector=vector, coefficient=4.0), 4)
    steered = SteeringResult(1, 4.0, " Love", EXOTIC[1], "I think", " so", " not", 4 * float(vector.norm()), 3.0,
                             tuple(f" w{int(i)}" for i in ids), shifts)
    return {"patching": patched, "patching_heads": by_head, "ablation": ablated, "attribution": attributed,
            "rotation": rotated, "steering": steered}


FIGURES = {"patching": (plots.patching_figure, {"colorbar"}), "patching_heads": (plots.patching_figure, {"colorbar"}),
           "ablation": (plots.ablation_figure, {"colorbar"}), "attribution": (plots.attribution_figure, {"colorbar"}),
           "rotation": (plots.rotation_figure, {"legend"}), "steering": (plots.steering_figure, set())}


@pytest.mark.parametrize("name", FIGURES)
def test_every_causal_figure_is_labelled_warning_free_and_written_at_the_dpi(name, results, tmp_path):
    draw, colours = FIGURES[name]
    fig = draw(results[name])
    check_labelled(fig, colours)
    width, height = fig.get_size_inches()
    path = saved(fig, tmp_path / f"{name}.png", dpi=40)
    assert np.allclose(imread(path).shape[:2], (height * 40, width * 40), atol=1)  # whole pixels
    assert width <= 16 and height <= 16


def test_the_patching_map_is_the_normalised_sweep_on_one_fixed_scale(results):
    result = results["patching"]
    fig = plots.patching_figure(result)
    image = fig.axes[0].images[0]
    assert image.get_clim() == (-1.0, 1.0)  # the same scale for every patching map
    assert np.allclose(np.asarray(image.get_array()), result.normalised.numpy())
    written = [float(text.get_text()) for text in fig.axes[0].texts]
    assert np.allclose(written, result.normalised.numpy().ravel(), atol=0.006)  # two decimals
    ticks = [label.get_text() for label in fig.axes[0].get_xticklabels()]
    assert "2: ' two'/' three'" in ticks and any("\\u4e16" in tick for tick in ticks)


def test_attribution_bars_and_heads_share_one_scale_in_logits(results):
    result = results["attribution"]
    fig = plots.attribution_figure(result)
    bars, heads = fig.axes[0], fig.axes[1]
    widths = [patch.get_width() for patch in bars.patches]
    L = result.heads.shape[0]
    assert len(widths) == 1 + 2 * L + 1  # embeddings, each block's attention and MLP, the rest
    assert sum(widths) == pytest.approx(result.total, abs=1e-4)
    low, high = heads.images[0].get_clim()
    assert low == -high and bars.get_xlim()[1] == pytest.approx(1.08 * high)


def test_rotation_curves_run_from_zero_to_a_quarter_turn(results):
    fig = plots.rotation_figure(results["rotation"])
    lines = [line for line in fig.axes[0].get_lines() if line.get_label() in ("block 0", "block 1")]
    assert len(lines) == 2 and lines[0].get_xdata()[-1] == pytest.approx(math.pi / 2)
