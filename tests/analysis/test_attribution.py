"""Direct logit attribution against NumPy, its parts summing to the logit difference on every variant that is
linear once its scale is frozen, and each part against the FreezeScale edit itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_patching import VARIANTS, model, tokenizer, variant_model  # noqa: F401  (the fixtures)

from minigpt_geom.analysis.attribution import attribution_table, direct_logit_attribution, text_attribution
from minigpt_geom.analysis.metric import Contrast
from minigpt_geom.errors import InputError
from minigpt_geom.model.edits import FreezeScale, Set
from minigpt_geom.model.trace_request import TraceRequest

TEXT = torch.tensor([[5, 17, 42, 99, 7, 250, 31]])
CONTRAST = Contrast(answer=3, wrong=4)
LINEAR = ("layernorm", "rmsnorm", "sphere", "fixed_sigma", "none")  # scale-free, or linear already


@torch.no_grad()
def test_every_head_and_mlp_against_numpy(model):  # noqa: F811
    position = 4
    embeddings, heads, bias, mlps, rest, m = direct_logit_attribution(model, TEXT, CONTRAST, position)
    logits, trace = model(TEXT, trace=TraceRequest(capture=("head_out", "mlp_out", "resid_pre", "resid_post")))
    z = trace.captured["head_out"][:, 0, position].double().numpy()  # [L, H, d_head], before W_O
    x_L = trace.captured["resid_post"][-1, 0, position].double().numpy()
    L, H, dh = z.shape
    ln_f = model.ln_f
    gamma, beta = ln_f.weight.double().numpy(), ln_f.bias.double().numpy()
    E = model.wte.weight.double().numpy()
    u = E[3] - E[4]
    sigma = np.sqrt(((x_L - x_L.mean()) ** 2).mean() + ln_f.eps)  # layer norm's σ, frozen at this run's
    dla = lambda c: (gamma * (c - c.mean()) / sigma) @ u  # noqa: E731
    for layer in range(L):
        W_O = model.h[layer].attn.c_proj.weight.double().numpy()  # [d, d], rows h·dh … (h+1)·dh belong to head h
        for head in range(H):
            assert heads[layer, head].item() == pytest.approx(dla(z[layer, head] @ W_O[head * dh:(head + 1) * dh]),
                                                                abs=1e-6)
        assert bias[layer].item() == pytest.approx(dla(model.h[layer].attn.c_proj.bias.double().numpy()), abs=1e-6)
        assert mlps[layer].item() == pytest.approx(dla(trace.captured["mlp_out"][layer, 0, position].double().numpy()),
                                                   abs=1e-6)
    assert embeddings == pytest.approx(dla(trace.captured["resid_pre"][0, 0, position].double().numpy()), abs=1e-6)
    assert rest == pytest.approx(beta @ u, abs=1e-9)
    z_out = logits[0, position].double().numpy()
    assert m == pytest.approx(z_out[3] - z_out[4], abs=1e-5)
    total = embeddings + heads.sum().item() + bias.sum().item() + mlps.sum().item() + rest
    assert total == pytest.approx(m, abs=1e-4) and abs(m) > 1e-3


@pytest.mark.parametrize("variant", LINEAR)
@pytest.mark.parametrize("folded", [False, True])
def test_the_parts_sum_to_the_logit_difference(model, variant, folded):  # noqa: F811
    edited = variant_model(model, variant)
    edited = edited.fold_ln() if folded else edited  # folded: an untied unembedding with a bias
    embeddings, heads, bias, mlps, rest, m = direct_logit_attribution(edited, TEXT, CONTRAST)
    total = embeddings + float(heads.sum()) + float(bias.sum()) + float(mlps.sum()) + rest
    assert total == pytest.approx(m, abs=1e-4 * (1 + abs(m)))
    assert heads.abs().max() > 1e-6  # the heads write along e_answer − e_wrong: a real split, not all in the rest


@torch.no_grad()
@pytest.mark.parametrize("variant", ["layernorm", "rmsnorm"])
def test_each_part_is_what_the_freeze_scale_edit_loses_without_it(model, variant):  # noqa: F811
    edited = variant_model(model, variant)
    position = -1
    embeddings, heads, _, mlps, _, m = direct_logit_attribution(edited, TEXT, CONTRAST, position)
    _, trace = edited(TEXT, trace=TraceRequest(capture=("resid_post", "head_write", "mlp_out")))
    L = edited.config.n_layer
    x_L = trace.captured["resid_post"][-1, 0, position]
    for part, expected in ((trace.captured["head_write"][0, 0, position, 1], heads[0, 1]),
                           (trace.captured["mlp_out"][L - 1, 0, position], mlps[L - 1])):
        edits = [Set("resid_post", layer=L - 1, positions=TEXT.shape[1] - 1, value=x_L - part),
                 FreezeScale("ln_f", reference=trace)]  # x_L without the part, read at this run's scale
        without = CONTRAST.measure(edited(TEXT, edits=edits)[0, position])
        assert float(m - without) == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("variant", sorted(set(VARIANTS) - set(LINEAR)))
def test_variants_that_no_frozen_scale_makes_linear_are_refused_in_one_line(model, variant):  # noqa: F811
    with pytest.raises(InputError, match="direct logit attribution does not apply") as error:
        direct_logit_attribution(variant_model(model, variant), TEXT, CONTRAST)
    assert "\n" not in str(error.value)


def test_text_attribution_defaults_refusals_and_table(tokenizer, model):  # noqa: F811
    with pytest.raises(InputError, match="not a probability"):
        direct_logit_attribution(model, TEXT, Contrast(3, 4, "probability"))
    with pytest.raises(InputError, match="outside the text"):
        text_attribution(model, tokenizer, "The cat sat.", position=40)
    result = text_attribution(model, tokenizer, "The cat sat on the mat.")
    with torch.no_grad():
        top = model(torch.tensor([tokenizer.encode("The cat sat on the mat.")]))[0, -1].topk(2).indices.tolist()
    assert [result.answer_word, result.wrong_word] == [tokenizer.decode([i]) for i in top]
    assert result.logit_diff > 0 and result.total == pytest.approx(result.logit_diff, abs=1e-4)
    table = attribution_table(result)
    L, H = model.config.n_layer, model.config.n_head
    assert len(table.rows) == 1 + L * (H + 2) + 1 + 2  # embeddings, each block's parts, the rest, the totals


@pytest.mark.parametrize("variant, reading", [("layernorm", "through ln_f (layernorm) with its scale frozen"),
                                              ("rmsnorm", "through ln_f (rmsnorm) with its scale frozen"),
                                              ("none", "through ln_f (none, linear: nothing to freeze)"),
                                              ("fixed_sigma", "through ln_f (fixed_sigma, linear: nothing to freeze)")])
def test_the_caption_says_how_the_models_own_ln_f_was_read(tokenizer, model, variant, reading):  # noqa: F811
    result = text_attribution(variant_model(model, variant), tokenizer, "The cat sat on the mat.")
    assert result.reading == reading and attribution_table(result).caption.endswith(reading)
