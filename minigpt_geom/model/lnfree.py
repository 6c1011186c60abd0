"""Taking layer norm out (Heimersheim 2024, arXiv 2409.13710): calibrate, fix σ, fold into the weights.

Layer norm divides each token by its own σ(x), which is what makes it non-linear:
    LN(x)       = γ ⊙ (x − μ)/σ(x) + β
    fixed σ_s   = γ ⊙ (x − μ)/σ_s  + β  = x P diag(γ)/σ_s + β        P = I − 11ᵀ/d, the centring projection
With one constant σ_s per site s it is linear, so the linear map W, b that reads it absorbs it exactly:
    (x P diag(γ)/σ_s + β) W + b = x W' + b',   W' = P diag(γ) W / σ_s,   b' = β W + b
and the model runs with norm="none": no sphere at all. `P G` subtracts each column's mean from G.

Checkpoints published without layer norm keep GPT-2's file format and switch it off from the inside:
ε = 1e12 makes σ(x)² + ε ≈ ε for every token, and γ multiplied by 1e6 = √ε undoes the division, so
LN(x) ≈ (γ/√ε) ⊙ (x − μ) + β: the fixed-σ map with σ_s = √ε/γ-scale folded into γ (`is_ln_free_eps`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..config import site_name
from .fold import fold_model
from .norm_site import SphereDiagnostics, SphereNorm
from .variants import get_norm

if TYPE_CHECKING:
    from .gpt2 import GPT2

LN_FREE_EPS = 1e12  # the published convention: layer norm switched off, √ε = 1e6 multiplies γ
LN_FREE_THRESHOLD = 1e10  # an ε from here up means "layer norm switched off": no real σ² comes near it


def sites(model: GPT2) -> list[str]:
    """Every layer-norm site in forward order: h.0.ln_1, h.0.ln_2, …, ln_f."""
    return [name for name, module in model.named_modules() if isinstance(module, SphereNorm)]


# ---- calibration ----------------------------------------------------------------------------------


def site_sigma(site: SphereDiagnostics, d: int) -> Tensor:
    """σ of each token at a site, from its diagnostics: σ² = ‖x‖²/d − μ² = (‖x‖² − mean_component²)/d."""
    return ((site.input_norm.double() ** 2 - site.mean_component.double() ** 2) / d).clamp_min(0).sqrt()


@torch.no_grad()
def calibrate_sigma(model: GPT2, windows: Iterable[Tensor]) -> dict[str, tuple[float, float]]:
    """{site: (mean σ over positions ≥ 1, mean σ at position 0)} of each site's input, over windows [B, T].

    Measured with the traced forward pass itself. Position 0 is kept apart: GPT-2's first residual vector is
    far longer than the rest, so it would dominate the average."""
    totals = {name: [0.0, 0.0] for name in sites(model)}
    rest = first = 0  # positions counted
    for idx in windows:
        _, trace = model(idx, trace=True)
        sigmas = {"ln_f": site_sigma(trace.ln_f, model.config.n_embd)}  # [B, T]
        for kind in ("ln_1", "ln_2"):
            stacked = site_sigma(getattr(trace, kind), model.config.n_embd)  # [L, B, T]
            sigmas.update({site_name(layer, kind): stacked[layer] for layer in range(trace.n_layer)})
        for name, sigma in sigmas.items():
            totals[name][0] += sigma[:, 1:].sum().item()
            totals[name][1] += sigma[:, 0].sum().item()
        rest, first = rest + idx.shape[0] * (idx.shape[1] - 1), first + idx.shape[0]
    if not first:
        raise ValueError("calibrate_sigma needs at least one window")
    return {name: (a / max(rest, 1), b / first) for name, (a, b) in totals.items()}


# ---- fixed σ ----------------------------------------------------------------------------------------


@torch.no_grad()
def fix_sigma(model: GPT2, site: str, sigma: float) -> None:
    """Switch one site of `model` (in place) to the fixed-σ variant with the calibrated constant σ."""
    module = model.get_submodule(site)
    module.set_variant(get_norm("fixed_sigma"))
    module.sigma.fill_(sigma)


def check_all_fixed(model: GPT2) -> None:
    """ValueError unless every site is on the fixed-σ variant: only then is the model linear between blocks."""
    if any(model.get_submodule(site).variant.name != "fixed_sigma" for site in sites(model)):
        raise ValueError("every site must be fixed-σ first (see lnfree.fix_sigma)")


def fold_fixed_sigma(model: GPT2) -> GPT2:
    """A norm="none" model with the same logits as `model` (left as it is), whose every site must be fixed-σ.

    Each site's P diag(γ)/σ_s and β go into the linear map that reads it (fold.py); ln_f's go into an untied
    unembedding with a bias."""
    check_all_fixed(model)
    return model.fold_ln()


# ---- the removal schedule ------------------------------------------------------------------------------


def removal_order(model: GPT2) -> list[str]:
    """Sites in the order they are switched to fixed σ: every MLP site (ln_2), then every attention site
    (ln_1), then ln_f, each from the first layer to the last (modelled on Heimersheim's schedule)."""
    n = model.config.n_layer
    return [site_name(i, "ln_2") for i in range(n)] + [site_name(i, "ln_1") for i in range(n)] + ["ln_f"]


def removal_schedule(order: list[str], steps: int, start: float = 0.1, stop: float = 0.6) -> dict[int, list[str]]:
    """{step: sites switched at that step}: evenly spaced from `start` to `stop` of the run, so the model
    fine-tunes a while with layer norm, then a site at a time, then with no layer norm at all."""
    if steps < 1:
        raise ValueError(f"a removal needs at least one step, got {steps}")
    first, last = round(start * steps), max(round(stop * steps), round(start * steps))
    schedule: dict[int, list[str]] = {}
    for i, site in enumerate(order):
        step = first + (round(i * (last - first) / (len(order) - 1)) if len(order) > 1 else 0)
        schedule.setdefault(min(step, steps - 1), []).append(site)
    return schedule


# ---- checkpoints that switch layer norm off from the inside -------------------------------------------


def is_ln_free_eps(eps: float) -> bool:
    """True for the ε = 1e12 convention of published LN-free GPT-2s (schaeff/…, apollo-research/gpt2_noLN)."""
    return eps >= LN_FREE_THRESHOLD


@torch.no_grad()
def from_ln_free_eps(model: GPT2) -> GPT2:
    """A model loaded with layer norm and ε ≥ 1e10 -> the exact norm="none" model it stands for (in place).

    With such an ε, LN(x) = γ ⊙ (x − μ)/√(σ² + ε) + β = (γ/√ε) ⊙ (x − μ) + β up to σ²/2ε (≤ 1e-8 for
    σ < 100): the fixed-σ map with σ_s = √ε."""
    for site in sites(model):
        fix_sigma(model, site, math.sqrt(model.config.ln_eps))
    return fold_model(model)


@torch.no_grad()
def ln_free_checkpoint(model: GPT2) -> GPT2:
    """The fixed-σ model as GPT-2 with layer norm switched off inside: ε = 1e12 and γ' = γ·√ε/σ at every site.

    LN(x) = γ' ⊙ (x − μ)/√(σ(x)² + ε) + β = γ ⊙ (x − μ)/σ + β to within σ(x)²/2ε: the same map.
    GPT-2's format ties the unembedding to E: a model whose unembedding is untied (it was folded) is folded
    to norm="none" instead, which saves as an untied checkpoint with the same logits."""
    check_all_fixed(model)
    if not model.lm_head.tied:
        return fold_fixed_sigma(model)
    stored = type(model)(replace(model.config, ln_eps=LN_FREE_EPS), norm="layernorm").to(model.wte.weight)
    stored.load_state_dict({k: v for k, v in model.state_dict().items() if not k.endswith(".sigma")})
    for site in sites(model):
        source, target = model.get_submodule(site), stored.get_submodule(site)
        target.weight.copy_(source.weight * (LN_FREE_EPS ** 0.5 / source.sigma))
    return stored
