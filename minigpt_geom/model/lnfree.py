"""Taking layer norm out (Heimersheim 2024, arXiv 2409.13710): fix σ, fold into the weights.

Layer norm divides each token by its own σ(x), which is what makes it non-linear:
    LN(x)       = γ ⊙ (x − μ)/σ(x) + β
    fixed σ_s   = γ ⊙ (x − μ)/σ_s  + β  = x P diag(γ)/σ_s + β        P = I − 11ᵀ/d, the centring projection
With one constant σ_s per site s it is linear, so the linear map W, b that reads it absorbs it exactly:
    (x P diag(γ)/σ_s + β) W + b = x W' + b',   W' = P diag(γ) W / σ_s,   b' = β W + b
and the model runs with norm="none": no sphere at all. `P G` subtracts each column's mean from G.

Checkpoints published without layer norm keep GPT-2's file format and switch it off from the inside:
ε = 1e12 makes σ(x)² + ε ≈ ε for every token, and γ multiplied by 1e6 = √ε undoes the division, so
LN(x) ≈ (γ/√ε) ⊙ (x − μ) + β: the fixed-σ map with σ_s = √ε/γ-scale folded into γ (`is_ln_free_eps`).

Measuring σ_s over a corpus and the order the sites are switched in are training's (training/remove_ln.py).
The functions take a GPT2 (`model`); gpt2.py imports this module, so the class is not named here.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from .fold import fold_model
from .variants import get_norm

LN_FREE_EPS = 1e12  # the published convention: layer norm switched off, √ε = 1e6 multiplies γ
LN_FREE_THRESHOLD = 1e10  # an ε from here up means "layer norm switched off": no real σ² comes near it


# ---- fixed σ ----------------------------------------------------------------------------------------


@torch.no_grad()
def fix_sigma(model: nn.Module, site: str, sigma: float) -> None:
    """Switch one site of `model` (in place) to the fixed-σ variant with the calibrated constant σ."""
    module = model.get_submodule(site)
    module.set_variant(get_norm("fixed_sigma"))
    module.sigma.fill_(sigma)


def check_all_fixed(model: nn.Module) -> None:
    """ValueError unless every site is on the fixed-σ variant: only then is the model linear between blocks."""
    if any(site.variant.name != "fixed_sigma" for site in model.norm_sites().values()):
        raise ValueError("every site must be fixed-σ first (see lnfree.fix_sigma)")


def fold_fixed_sigma(model: nn.Module) -> nn.Module:
    """A norm="none" model with the same logits as `model` (left as it is), whose every site must be fixed-σ.

    Each site's P diag(γ)/σ_s and β go into the linear map that reads it (fold.py); ln_f's go into an untied
    unembedding with a bias."""
    check_all_fixed(model)
    return model.fold_ln()


# ---- checkpoints that switch layer norm off from the inside -------------------------------------------


def is_ln_free_eps(eps: float) -> bool:
    """True for the ε = 1e12 convention of published LN-free GPT-2s (schaeff/…, apollo-research/gpt2_noLN)."""
    return eps >= LN_FREE_THRESHOLD


@torch.no_grad()
def from_ln_free_eps(model: nn.Module) -> nn.Module:
    """A model loaded with layer norm and ε ≥ 1e10 -> the exact norm="none" model it stands for (in place).

    With such an ε, LN(x) = γ ⊙ (x − μ)/√(σ² + ε) + β = (γ/√ε) ⊙ (x − μ) + β up to σ²/2ε (≤ 1e-8 for
    σ < 100): the fixed-σ map with σ_s = √ε."""
    for site in model.norm_sites():
        fix_sigma(model, site, math.sqrt(model.config.ln_eps))
    return fold_model(model)


@torch.no_grad()
def ln_free_checkpoint(model: nn.Module) -> nn.Module:
    """The fixed-σ model as GPT-2 with layer norm switched off inside: ε = 1e12 and γ' = γ·√ε/σ at every site.

    LN(x) = γ' ⊙ (x − μ)/√(σ(x)² + ε) + β = γ ⊙ (x − μ)/σ + β to within σ(x)²/2ε: the same map.
    GPT-2's format ties the unembedding to E: a model whose unembedding is untied (it was folded) is folded
    to norm="none" instead, which saves as an untied checkpoint with the same logits."""
    check_all_fixed(model)
    if not model.lm_head.tied:
        return fold_fixed_sigma(model)
    stored = type(model)(replace(model.config, ln_eps=LN_FREE_EPS), norm="layernorm").to(model.wte.weight)
    stored.load_state_dict({k: v for k, v in model.state_dict().items() if not k.endswith(".sigma")})
    for site, source in model.norm_sites().items():
        target = stored.get_submodule(site)
        target.weight.copy_(source.weight * (LN_FREE_EPS ** 0.5 / source.sigma))
    return stored
