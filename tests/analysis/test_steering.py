"""Steering (ActAdd) against a TransformerLens hook on hook_resid_pre, generation through the KV cache against
recomputing every position, and every norm variant."""

from __future__ import annotations

import pytest
import torch
from test_patching import VARIANTS, model, tokenizer, variant_model  # noqa: F401  (the fixtures)
from transformer_lens_oracle import bridge

from minigpt_geom.analysis.steering import next_word_shift, steering_table, steering_vector, text_steering
from minigpt_geom.errors import InputError
from minigpt_geom.model.edits import Add
from minigpt_geom.text.generation import Sampling

PROMPT = torch.tensor([[5, 17, 42, 99, 7]])
PLUS, MINUS = torch.tensor([[60, 61, 62]]), torch.tensor([[8, 1]])


@pytest.mark.slow
def test_the_vector_and_its_shift_match_a_transformer_lens_hook(small_checkpoints, model):  # noqa: F811
    lens = bridge(small_checkpoints["transformers"])
    layer, c = 1, 3.0
    with torch.no_grad():
        _, plus = lens.run_with_cache(PLUS)
        _, minus = lens.run_with_cache(MINUS)
        expected = plus[f"blocks.{layer}.hook_resid_pre"][0, -1] - minus[f"blocks.{layer}.hook_resid_pre"][0, -1]
        vector = steering_vector(model, PLUS, MINUS, layer)
        assert torch.allclose(vector, expected, atol=1e-5)
        before = torch.log_softmax(lens(PROMPT)[0, -1], dim=-1)
        hook = (f"blocks.{layer}.hook_resid_pre", lambda x, hook: x + c * expected)  # every position
        steered = lens.run_with_hooks(PROMPT, fwd_hooks=[hook])
        after = torch.log_softmax(steered[0, -1], dim=-1)
    ids, shifts = next_word_shift(model, PROMPT, Add("resid_pre", layer=layer, vector=vector, coefficient=c), 5)
    assert torch.allclose(shifts, (after - before)[ids], atol=1e-5)
    assert shifts[0] == pytest.approx(float((after - before).max()), abs=1e-5)
    assert shifts[-1] == pytest.approx(float((after - before).min()), abs=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("variant", VARIANTS)
def test_steered_generation_through_the_cache_recomputes_every_position_with_the_edit(tokenizer, model,  # noqa: F811
                                                                                       variant):
    edited = variant_model(model, variant)
    result = text_steering(edited, tokenizer, "The cat sat on", " the", " two", layer=1, coefficient=8.0,
                           max_new_tokens=6, sampling=Sampling(0.0), top_k=3)
    encode = lambda text: torch.tensor([tokenizer.encode(text)])  # noqa: E731
    vector = steering_vector(edited, encode(" the"), encode(" two"), 1)
    sequence = encode("The cat sat on")
    T = sequence.shape[1]
    for _ in range(6):  # greedy, no cache: the whole sequence each step, the vector added at every position
        logits = edited(sequence, edits=[Add("resid_pre", layer=1, vector=vector, coefficient=8.0)])
        sequence = torch.cat([sequence, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    assert result.steered == tokenizer.decode(sequence[0, T:].tolist())
    assert result.steered != result.unsteered  # the vector changed the text: an ignored edit would not pass
    assert len(result.shifted_words) == 6 and result.shifts[0] >= result.shifts[-1]
    assert result.vector_norm == pytest.approx(8.0 * float(vector.norm()), rel=1e-5)


def test_steering_refuses_a_zero_difference_and_labels_its_table(tokenizer, model):  # noqa: F811
    with pytest.raises(InputError, match="difference is zero"):
        text_steering(model, tokenizer, "The cat", " the", " the", layer=0)
    with pytest.raises(InputError, match="outside the model's blocks"):
        text_steering(model, tokenizer, "The cat", " the", " two", layer=2)
    result = text_steering(model, tokenizer, "The cat", " the", " two", max_new_tokens=3, top_k=2)
    assert result.layer == model.config.n_layer // 2
    table = steering_table(result)
    assert [row[0] for row in table.rows] == ["continuation"] * 2 + ["Δ log p"] * 4
