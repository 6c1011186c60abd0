"""Activation patching against TransformerLens's serial sweeps, and the batched chunks against one pass per cell,
on every norm variant."""

from __future__ import annotations

import pytest
import torch
from transformer_lens_oracle import bridge, logit_difference

from minigpt_geom import GPT2
from minigpt_geom.analysis.metric import Contrast
from minigpt_geom.analysis.patching import patch_sweep, patching_matrix, patching_rows, text_patching
from minigpt_geom.errors import InputError
from minigpt_geom.model.edits import Set
from minigpt_geom.model.trace_request import TraceRequest
from minigpt_geom.text.tokenizer import Tokenizer

CLEAN = torch.tensor([[5, 17, 42, 99, 7, 250]])
CORRUPTED = torch.tensor([[5, 17, 43, 99, 120, 250]])  # positions 2 and 4 differ
CONTRAST = Contrast(answer=3, wrong=4)
VARIANTS = ("layernorm", "rmsnorm", "sphere", "dyt", "fixed_sigma", "none", "user")


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    """The shared small random GPT-2."""
    return GPT2.from_pretrained(tiny_checkpoint).eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    """Its trained byte-level vocabulary (300 ids)."""
    return Tokenizer.from_pretrained(tiny_checkpoint)


def variant_model(model: GPT2, name: str) -> GPT2:
    """The model with every site running `name` ("user": a variant registered here, as a user would, and taken out
    of the registry again once the model holds it, so that other tests see the built-in ones alone)."""
    if name != "user":
        return model.with_norm(name)
    from minigpt_geom import NORM_VARIANTS, register_norm

    variant = register_norm("test_max_abs", lambda x, eps: x / (x.abs().amax(dim=-1, keepdim=True) + eps))
    try:
        return model.with_norm(variant)
    finally:
        NORM_VARIANTS.pop("test_max_abs")


def one_pass_per_cell(model: GPT2, site: str, contrast: Contrast = CONTRAST) -> torch.Tensor:
    """The sweep the slow way: one unbatched forward pass per place, each with a single Set edit."""
    _, source = model(CLEAN, trace=TraceRequest(capture=(site,)))
    places = CLEAN.shape[1] if site == "resid_pre" else model.config.n_head
    values = torch.empty(model.config.n_layer, places)
    for layer in range(model.config.n_layer):
        for place in range(places):
            where = {"positions": place} if site == "resid_pre" else {"head": place}
            logits = model(CORRUPTED, edits=[Set(site, layer=layer, source=source, **where)])
            values[layer, place] = contrast.measure(logits[0, -1])
    return values


@pytest.mark.slow
def test_residual_and_head_sweeps_match_transformer_lens(small_checkpoints, model):
    lens = bridge(small_checkpoints["transformers"])
    from transformer_lens import patching

    _, cache = lens.run_with_cache(CLEAN)
    metric = logit_difference(CONTRAST.answer, CONTRAST.wrong)
    with torch.no_grad():
        expected_resid = patching.get_act_patch_resid_pre(lens, CORRUPTED, cache, metric)
        expected_heads = patching.get_act_patch_attn_head_out_all_pos(lens, CORRUPTED, cache, metric)
    resid, *_ = patch_sweep(model, CLEAN, CORRUPTED, CONTRAST, site="resid_pre", rows=5)
    heads, *_ = patch_sweep(model, CLEAN, CORRUPTED, CONTRAST, site="head_out", rows=3)
    assert expected_resid.shape == resid.shape and expected_heads.shape == heads.shape
    assert torch.allclose(resid, expected_resid.float(), atol=1e-5, rtol=0)
    assert torch.allclose(heads, expected_heads.float(), atol=1e-5, rtol=0)
    assert resid.std() > 1e-3 and heads.std() > 1e-4  # the oracle compared something that varies


@pytest.mark.parametrize("site", ["resid_pre", "head_out"])
def test_batched_chunks_give_one_pass_per_cell(model, site):
    expected = one_pass_per_cell(model, site)
    for rows in (1, 5, None):  # one row a pass, chunks that split a layer, everything in one pass
        values, _, _, passes = patch_sweep(model, CLEAN, CORRUPTED, CONTRAST, site=site, rows=rows)
        assert torch.allclose(values, expected, atol=1e-5, rtol=0), rows
    assert passes == 2  # the clean run, then every patched copy and the corrupted run in one batch


@pytest.mark.parametrize("variant", VARIANTS)
def test_patching_runs_on_every_variant(model, variant):
    edited = variant_model(model, variant)
    probability = Contrast(3, 4, "probability")
    values, clean, corrupted, _ = patch_sweep(edited, CLEAN, CORRUPTED, probability, site="resid_pre", rows=4)
    assert torch.allclose(values, one_pass_per_cell(edited, "resid_pre", probability), atol=1e-6, rtol=0)
    # layer 0 is x_0 = E[w] + P[t]: where the prompts agree, patching changes nothing; at the first position that
    # differs, what follows is the same in both, so the patched run is the clean run up to that token
    assert torch.allclose(values[0, [0, 1, 3, 5]], torch.full((4,), corrupted), atol=1e-6)
    assert clean != corrupted  # the prompts differ in what they predict: the sweep measured something


def test_text_patching_refuses_prompts_of_different_lengths_and_labels_its_tables(model, tokenizer):
    with pytest.raises(InputError, match="same number of tokens"):
        text_patching(model, tokenizer, "The cat sat on the mat.", "The cat sat.")
    clean, corrupted = "The cat sat on the mat.", "The cat sat on the two."  # one token each: the same length
    assert len(tokenizer.encode(clean)) == len(tokenizer.encode(corrupted))
    result = text_patching(model, tokenizer, clean, corrupted, rows_per_pass=4)
    assert result.answer_word == tokenizer.decode([result.contrast.answer])
    assert result.contrast.answer != result.contrast.wrong
    assert result.passes == 1 + 1 + -(-(2 * len(tokenizer.encode(clean)) + 1) // 4)
    rows = patching_rows(result)
    assert len(rows) == result.values.numel() and {"clean_token", "corrupted_token", "normalised"} <= set(rows[0])
    table = patching_matrix(result)
    assert len(table.rows) == 2 and len(table.header) == 1 + len(result.clean_words)
    shares = torch.tensor([row["normalised"] for row in rows]).view_as(result.values)
    expected = (result.values - result.corrupted) / (result.clean - result.corrupted)
    assert torch.allclose(shares, expected)
