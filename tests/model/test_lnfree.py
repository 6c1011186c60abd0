"""Layer-norm removal: the fixed-σ variant is its formula, folding it away keeps the logits, and checkpoints
in the ε = 1e12 / γ × 1e6 convention give transformers' own logits as norm="none" models."""

import pytest
import torch

from helpers import SMALL, load_hf, random_hf_model, save_transformers_layout
from minigpt_geom import GPT2, TraceRequest
from minigpt_geom.model.lnfree import fix_sigma, fold_fixed_sigma, from_ln_free_eps
from minigpt_geom.training.remove_ln import calibrate_sigma, removal_order, removal_schedule

TOLERANCE = 1e-4


def windows(n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, SMALL["vocab_size"], (2, 16), generator=g) for _ in range(n)]


@torch.no_grad()
def test_fixed_sigma_equals_its_formula(tiny_checkpoint):
    model = GPT2.from_pretrained(tiny_checkpoint)
    norm = model.h[1].ln_2
    fix_sigma(model, "h.1.ln_2", 0.37)
    x = torch.randn(2, 5, 48, dtype=torch.float64)
    expected = norm.weight.double() * (x - x.mean(-1, keepdim=True)) / 0.37 + norm.bias.double()
    y, _ = norm.double()(x)
    assert torch.allclose(y, expected, atol=1e-12)


@torch.no_grad()
def test_calibrated_sigma_is_the_mean_token_sigma(tiny_checkpoint):
    model = GPT2.from_pretrained(tiny_checkpoint)
    batches = windows()
    scales = calibrate_sigma(model, batches)
    assert set(scales) == set(model.norm_sites()) and len(scales) == 2 * 2 + 1
    # brute force: ln_f reads x_L; σ of each token is the population standard deviation of its row
    states = torch.cat([model(b, trace=TraceRequest(states=True))[1].states[-1] for b in batches])  # [B, T, d]
    sigma = states.double().var(-1, unbiased=False).sqrt()
    assert abs(scales["ln_f"][0] - sigma[:, 1:].mean().item()) < 1e-5
    assert abs(scales["ln_f"][1] - sigma[:, 0].mean().item()) < 1e-5


@torch.no_grad()
def test_folded_export_gives_the_fixed_sigma_logits(tiny_checkpoint):
    model = GPT2.from_pretrained(tiny_checkpoint)
    scales = calibrate_sigma(model, windows())
    for site, (sigma, _) in scales.items():
        fix_sigma(model, site, sigma)
    idx = windows(1, seed=1)[0]
    folded = fold_fixed_sigma(model)
    assert all(s.variant.name == "none" for s in folded.norm_sites().values())
    assert (folded(idx) - model(idx)).abs().max() <= TOLERANCE
    # and the fixed-σ model is a real change from layer norm, not a no-op
    assert (GPT2.from_pretrained(tiny_checkpoint)(idx) - model(idx)).abs().max() > 1e-2


@torch.no_grad()
def test_ln_free_eps_checkpoint_matches_transformers(tmp_path):
    hf = random_hf_model(seed=4, **SMALL)
    hf.config.layer_norm_epsilon = 1e12
    for module in hf.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e12
            module.weight.mul_(1e6)
    save_transformers_layout(hf, tmp_path)
    reference = load_hf(tmp_path)
    idx = windows(1, seed=2)[0]
    with pytest.warns(UserWarning, match="layer norm is switched off inside this file"):  # said once, at load
        model = GPT2.from_pretrained(tmp_path)
    assert all(s.variant.name == "none" for s in model.norm_sites().values())
    assert (model(idx) - reference(idx).logits).abs().max() <= TOLERANCE
    # asked for explicitly, the same file runs its (switched-off) layer norms: the same logits again
    as_stored = GPT2.from_pretrained(tmp_path, norm="layernorm")
    assert (as_stored(idx) - reference(idx).logits).abs().max() <= TOLERANCE
    assert (from_ln_free_eps(as_stored)(idx) - model(idx)).abs().max() <= TOLERANCE


def test_removal_schedule_switches_every_site_once_in_order(tiny_checkpoint):
    model = GPT2.from_pretrained(tiny_checkpoint)
    order = removal_order(model)
    assert order == ["h.0.ln_2", "h.1.ln_2", "h.0.ln_1", "h.1.ln_1", "ln_f"] and set(order) == set(model.norm_sites())
    for steps in (1, 4, 50, 1000):
        schedule = removal_schedule(order, steps)
        switched = [site for step in sorted(schedule) for site in schedule[step]]
        assert switched == order and all(0 <= step < steps for step in schedule)
    schedule = removal_schedule(order, 1000)
    assert sorted(schedule) == [100, 225, 350, 475, 600]  # 10 % … 60 % of the run, evenly spaced


def test_fixed_sigma_is_a_constant_and_dyt_alpha_is_learned(tiny_checkpoint):
    # the variant mechanism, not the projection, says which scalars training may change
    model = GPT2.from_pretrained(tiny_checkpoint, norm={"ln_1": "dyt"})
    fix_sigma(model, "h.0.ln_2", 0.5)
    idx = windows(1)[0]
    torch.nn.functional.cross_entropy(model(idx)[:, :-1].flatten(0, 1), idx[:, 1:].flatten()).backward()
    assert model.h[0].ln_2.sigma.grad is None and not model.h[0].ln_2.sigma.requires_grad
    assert model.h[0].ln_1.alpha.grad is not None and model.h[0].ln_1.alpha.grad.abs() > 0
