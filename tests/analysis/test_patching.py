"""Activation patching against TransformerLens's serial sweeps, and the batched chunks against one pass per cell,
on every norm variant."""

from __future__ import annotations

import pytest
import torch
from bpe_files import write_vocab
from conftest import random_hf_model
from transformer_lens_oracle import bridge, logit_difference, transformer_lens

from minigpt_geom import GPT2
from minigpt_geom.analysis.metric import Contrast
from minigpt_geom.analysis.patching import patch_sweep, patching_matrix, patching_rows, text_patching
from minigpt_geom.errors import InputError
from minigpt_geom.model.edits import Set
from minigpt_geom.model.trace_request import TraceRequest
from minigpt_geom.text.tokenizer import Tokenizer

SHAPE = dict(n_layer=2, n_head=4, n_embd=48, n_positions=32, vocab_size=300)
CLEAN = torch.tensor([[5, 17, 42, 99, 7, 250]])
CORRUPTED = torch.tensor([[5, 17, 43, 99, 120, 250]])  # positions 2 and 4 differ
CONTRAST = Contrast(answer=3, wrong=4)
VARIANTS = ("layernorm", "rmsnorm", "sphere", "dyt", "fixed_sigma", "none", "user")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random GPT-2 saved by transformers (save_pretrained) with a tokenizer; (the HF model, its folder)."""
    folder = tmp_path_factory.mktemp("patching")
    hf = random_hf_model(seed=6, **SHAPE)
    hf.save_pretrained(str(folder))
    write_vocab(folder, SHAPE["vocab_size"] - 257)
    return hf, folder


@pytest.fixture(scope="module")
def model(checkpoint):
    return GPT2.from_pretrained(checkpoint[1]).eval()


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
def test_residual_and_head_sweeps_match_transformer_lens(checkpoint, model):
    transformer_lens()
    from transformer_lens import patching

    lens = bridge(*checkpoint)
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
    assert not torch.isclose(torch.tensor(clean), torch.tensor(corrupted), atol=1e-7)


def test_text_patching_refuses_prompts_of_different_lengths_and_labels_its_tables(checkpoint, model):
    tokenizer = Tokenizer.from_pretrained(checkpoint[1])
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
