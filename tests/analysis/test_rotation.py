"""Turning a word's point: the turned point against NumPy, the batched curve against one pass per angle, and every
variant (those without a sphere refused in one line)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_patching import VARIANTS, model, tokenizer, variant_model  # noqa: F401  (the fixtures)

from minigpt_geom.analysis.metric import Contrast
from minigpt_geom.analysis.rotation import rotation_matrix, rotation_rows, rotation_sweep, text_rotation
from minigpt_geom.errors import InputError
from minigpt_geom.model.edits import Rotate
from minigpt_geom.model.trace_request import TraceRequest

TEXT = torch.tensor([[5, 17, 42, 99, 7, 250, 31]])
CONTRAST = Contrast(3, 4, "probability")
SPHERES = ("layernorm", "rmsnorm", "sphere")


@torch.no_grad()
def test_the_turned_point_keeps_its_radius_and_turns_by_theta_toward_the_word(model):  # noqa: F811
    u = model.unembedding_rows()[9]
    _, plain = model(TEXT, trace=TraceRequest(capture=("ln_1",)))
    p = plain.captured["ln_1"][1, 0, 3].double().numpy()  # block 1's first site, position 3
    target = u.double().numpy() - u.double().numpy().mean()  # layer norm reads the centred direction
    for theta in (0.3, math.pi / 2):
        _, trace = model(TEXT, trace=TraceRequest(capture=("ln_1",)),
                         edits=[Rotate("ln_1", layer=1, positions=3, angle=theta, toward=u)])
        turned = trace.captured["ln_1"][1, 0, 3].double().numpy()
        perpendicular = target - (target @ p) / (p @ p) * p
        expected = math.cos(theta) * p + math.sin(theta) * np.linalg.norm(p) * perpendicular / np.linalg.norm(
            perpendicular)
        assert np.allclose(turned, expected, atol=1e-5)
        assert np.linalg.norm(turned) == pytest.approx(np.linalg.norm(p), rel=1e-6)
        assert math.acos(np.clip(turned @ p / (p @ p), -1, 1)) == pytest.approx(theta, abs=1e-5)


@pytest.mark.parametrize("variant", SPHERES)
@pytest.mark.parametrize("site", ["ln_1", "ln_2", "ln_f"])
def test_the_batched_curve_gives_one_pass_per_angle(model, variant, site):  # noqa: F811
    edited = variant_model(model, variant)
    u = edited.unembedding_rows()[9]
    layers, position = (None, -1) if site == "ln_f" else ([0, 1], -2)
    angles, values, passes = rotation_sweep(edited, TEXT, u, CONTRAST, position=position, layers=layers, site=site,
                                            steps=5, rows=3)
    assert passes == (2 if site == "ln_f" else 4) and values.shape == (1 if site == "ln_f" else 2, 5)  # 3 rows a pass
    with torch.no_grad():
        plain = CONTRAST.measure(edited(TEXT)[0, -1])
        for i, layer in enumerate([None] if site == "ln_f" else layers):
            assert values[i, 0] == pytest.approx(float(plain), abs=1e-6)  # θ = 0: the text as it is
            for a in range(1, 5):
                edit = Rotate(site, layer=layer, positions=TEXT.shape[1] + position, angle=float(angles[a]), toward=u)
                one = CONTRAST.measure(edited(TEXT, edits=[edit])[0, -1])
                assert values[i, a] == pytest.approx(float(one), abs=1e-6)
    assert (values[:, -1] - values[:, 0]).abs().max() > 1e-7  # a quarter turn moves the answer's probability


@pytest.mark.parametrize("variant", sorted(set(VARIANTS) - set(SPHERES)))
def test_variants_without_a_sphere_are_refused_in_one_line(model, variant):  # noqa: F811
    edited = variant_model(model, variant)
    with pytest.raises(InputError, match="no sphere") as error:
        rotation_sweep(edited, TEXT, edited.unembedding_rows()[9], CONTRAST, steps=3)
    assert "\n" not in str(error.value)


def test_text_rotation_checks_and_tables(tokenizer, model):  # noqa: F811
    text = "The cat sat on the mat."
    with pytest.raises(InputError, match="--toward 'zzzz' is"):
        text_rotation(model, tokenizer, text, "zzzz")
    with pytest.raises(InputError, match="has no layer"):
        text_rotation(model, tokenizer, text, " the", site="ln_f", layers=[0])
    with pytest.raises(InputError, match="outside the model's blocks"):
        text_rotation(model, tokenizer, text, " the", layers=[5])
    with pytest.raises(InputError, match="turn the last one"):
        text_rotation(model, tokenizer, text, " the", site="ln_f", position=2)
    with pytest.raises(InputError, match="at least 2 angles"):
        text_rotation(model, tokenizer, text, " the", steps=1)
    result = text_rotation(model, tokenizer, text, " two", position=3, steps=4)
    assert result.toward_word == " two" and result.layers == (0, 1) and result.passes == 2
    assert len(rotation_rows(result)) == 2 * 4 and rotation_rows(result)[-1]["degrees"] == pytest.approx(90)
    assert rotation_matrix(result).header[-1] == "90°"
