"""GPT-2's dropout (issue 28): one p at transformers' three places, in training mode only.

Oracles: transformers' GPT2LMHeadModel on the same weights (eval mode exactly; in training mode the mean over
many independent masks, which is the same function of the weights only when the dropouts sit at the same
places with the same scaling), and brute force over the kernels' masks (their rate and their 1/(1 − p) scale)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from minigpt_geom import GPT2
from minigpt_geom.errors import CheckpointError
from minigpt_geom.model import attention, fused
from minigpt_geom.model.dropout import dropout
from minigpt_geom.text.generation import Sampling, generate

from helpers import load_hf, needs, write_random_checkpoint

SHAPE = dict(n_layer=2, n_head=2, n_embd=32, n_positions=16, vocab_size=300)
P = 0.3
IDS = torch.tensor([[5, 17, 200, 3, 42, 8, 99, 250]])


@pytest.fixture(scope="module")
def dropped(tmp_path_factory, tiny_checkpoint):
    """A random GPT-2 saved by GPT2.save_pretrained with dropout P: (folder, our model from it, in eval mode)."""
    folder = tmp_path_factory.mktemp("dropped")
    write_random_checkpoint(folder / "random", **SHAPE)
    model = GPT2.from_pretrained(folder / "random")
    model.config = replace(model.config, dropout=P)
    model.save_pretrained(folder / "saved", tiny_checkpoint)
    return folder / "saved", GPT2.from_pretrained(folder / "saved")


def test_config_json_records_p_under_transformers_three_names_and_both_read_it_back(dropped):
    folder, model = dropped
    stated = json.loads((folder / "config.json").read_text())
    assert [stated[name] for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop")] == [P, P, P]
    hf = load_hf(folder)
    assert (hf.config.embd_pdrop, hf.config.attn_pdrop, hf.config.resid_pdrop) == (P, P, P)
    assert model.config.dropout == P and not model.training  # from_pretrained: eval mode, no dropout


def test_eval_mode_is_transformers_exactly_with_the_pdrops_set(dropped):
    folder, model = dropped
    with torch.no_grad():
        expected = load_hf(folder)(IDS).logits
        for kernels in ("fused", "reference"):
            model.kernels = kernels
            assert torch.allclose(model(IDS), expected, atol=1e-5, rtol=0)


@pytest.mark.slow  # 4 × 2000 training-mode passes
def test_in_training_the_mean_over_masks_is_transformers_mean(dropped):
    """E over masks of the logits is a non-linear function of where each dropout sits; the same as transformers'
    (within 5 standard errors), and a transformers model missing one of the three dropouts is told apart."""
    folder, model = dropped
    needs("transformers")
    n = 2000
    batch = IDS.expand(n, -1)

    def mean_and_error(run) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        with torch.no_grad():
            logits = run(batch)
        return logits.mean(dim=0), logits.std(dim=0) / math.sqrt(n)

    hf = load_hf(folder).train()
    expected, error = mean_and_error(lambda x: hf(x).logits)
    eval_logits = model(IDS)[0].detach()
    assert (expected - eval_logits).abs().max() > 20 * error.max()  # dropout moves the mean: the test has power
    model.train()
    try:
        for kernels in ("fused", "reference"):
            model.kernels = kernels
            ours, our_error = mean_and_error(model)
            assert ((ours - expected).abs() <= 5 * torch.hypot(error, our_error)).all(), kernels
    finally:
        model.eval()
    without_embedding_dropout = load_hf(folder)
    without_embedding_dropout.transformer.drop.p = 0.0
    other, other_error = mean_and_error(lambda x: without_embedding_dropout.train()(x).logits)
    assert ((ours - other).abs() > 5 * torch.hypot(other_error, our_error)).any()


@pytest.mark.parametrize("attend", [attention.attend, fused.attend], ids=["reference", "fused"])
def test_attention_dropout_zeroes_a_share_p_of_the_weights_and_scales_the_rest(attend):
    """With q = k = 0 every query attends uniformly, a_ij = 1/(i+1) for j ≤ i, and v_j = e_j writes a_ij into
    output column j: the output is dropout(a) itself."""
    torch.manual_seed(0)
    n, T = 2000, 16
    q = k = torch.zeros(n, 1, T, T)
    v = torch.eye(T).expand(n, 1, T, T)
    out = attend(q, k, v, P)
    visible = torch.ones(T, T, dtype=torch.bool).tril()
    weights = 1 / torch.arange(1, T + 1, dtype=torch.float32)[:, None].expand(T, T)
    kept = out[..., visible] != 0
    assert abs(1 - kept.float().mean().item() - P) < 0.005  # 272 000 weights: the share dropped is p
    survivors = out[..., visible][kept]
    scaled = (weights[visible] / (1 - P)).expand_as(out[..., visible])[kept]
    assert torch.allclose(survivors, scaled, rtol=1e-5)  # the rest scaled by 1/(1 − p)
    assert (out[..., ~visible] == 0).all()  # masked keys stay unseen
    assert torch.equal(attend(q, k, v, 0.0), attend(q, k, v))


def test_dropout_of_a_vector_by_brute_force():
    torch.manual_seed(0)
    x = torch.full((10**6,), 2.0)
    y = dropout(x, P)
    assert abs((y == 0).float().mean().item() - P) < 0.002
    assert torch.equal(y[y != 0], torch.full_like(y[y != 0], 2.0 / (1 - P)))
    assert dropout(x, 0.0) is x


def test_training_mode_with_p_differs_from_eval_and_draws_random_numbers(dropped):
    _, model = dropped
    with torch.no_grad():
        eval_logits = model(IDS)
        state = torch.get_rng_state()
        model.train()
        try:
            train_logits = model(IDS)
        finally:
            model.eval()
    assert not torch.equal(torch.get_rng_state(), state)
    assert (train_logits - eval_logits).abs().max() > 0.01


@pytest.mark.parametrize("kernels", ["fused", "reference"])
def test_p_zero_in_training_mode_is_bitwise_the_eval_pass_and_draws_nothing(dropped, kernels):
    _, model = dropped
    plain = model.with_norm("layernorm")  # the same weights, its own config
    plain.config = replace(plain.config, dropout=0.0)
    plain.kernels = kernels
    with torch.no_grad():
        eval_logits = plain.eval()(IDS)
        state = torch.get_rng_state()
        train_logits = plain.train()(IDS)
    assert torch.equal(torch.get_rng_state(), state)  # no mask was drawn
    assert torch.equal(train_logits, eval_logits)


def test_generation_never_drops_and_leaves_the_mode_as_it_was(dropped):
    _, model = dropped
    expected = generate(model, IDS, 6, Sampling(temperature=1.0, seed=3))
    model.train()
    try:
        assert torch.equal(generate(model, IDS, 6, Sampling(temperature=1.0, seed=3)), expected)
        assert model.training
    finally:
        model.eval()


@pytest.mark.parametrize("pdrops, said", [
    ({"resid_pdrop": 1.0}, "resid_pdrop must be a probability with 0 ≤ p < 1, got 1.0"),
    ({"attn_pdrop": "0.1"}, "attn_pdrop must be a number"),
    ({"embd_pdrop": -0.5}, "embd_pdrop must be a probability"),
])
def test_a_config_json_with_an_impossible_dropout_is_refused_by_name(pdrops, said, tmp_path):
    write_random_checkpoint(tmp_path, **SHAPE)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **pdrops}))
    with pytest.raises(CheckpointError, match=said):
        GPT2.from_pretrained(tmp_path)


def test_three_different_pdrops_become_their_largest(tmp_path):
    write_random_checkpoint(tmp_path, **SHAPE)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "embd_pdrop": 0.1, "attn_pdrop": 0.2}))
    assert GPT2.from_pretrained(tmp_path).config.dropout == 0.2
