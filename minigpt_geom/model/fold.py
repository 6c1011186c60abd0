"""Folding a norm site's linear part into the linear map that reads it (TransformerLens' `fold_ln`; Heimersheim 2024).

A site computes y = γ ⊙ p + β with p = project(x). The map W [d, n], b [n] that reads it sees
    y W + b = p (diag(γ) W) + (β W + b)
so γ and β move into W and b, and the site is left with its projection (γ = 1, β = 0: the folded model is an
ordinary model with other weights, which saving writes and loading reads back). Fixed σ is linear as well,
p = (x − μ·1)/σ_s = x P/σ_s with P = I − 11ᵀ/d the centring projection, so the whole site goes:
    y W + b = x (P diag(γ) W / σ_s) + (β W + b)          and the site becomes norm="none".
ln_f is read by the unembedding, logits = y Eᵀ: it becomes untied, W = Eᵀ folded, with a bias Eβ.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .norm_site import SphereNorm

from .variants import get_norm


@torch.no_grad()
def fold_site(norm: SphereNorm, weight: Tensor, bias: Tensor) -> None:
    """Move the site's γ, β (and a fixed σ with its centring) into weight [d, n] and bias [n], in place."""
    gamma, beta = norm.affine_map()
    bias.add_(beta @ weight)  # first: it reads W before W changes
    if norm.variant.name == "fixed_sigma":
        scaled = weight * (gamma / norm.sigma)[:, None]  # diag(γ/σ_s) W
        weight.copy_(scaled - scaled.mean(dim=0, keepdim=True))  # P G: each column's mean over d removed
        norm.set_variant(get_norm("none"))
    else:
        weight.mul_(gamma[:, None])  # diag(γ) W
    norm.weight.fill_(1.0)
    norm.bias.zero_()


@torch.no_grad()
def fold_model(model: nn.Module) -> nn.Module:
    """Fold every site of `model` in place into the map that reads it; the unembedding becomes untied.

    `model` is a GPT2 (gpt2.py imports this module, so the class is not named here)."""
    for block in model.h:
        fold_site(block.ln_1, block.attn.c_attn.weight, block.attn.c_attn.bias)
        fold_site(block.ln_2, block.mlp.c_fc.weight, block.mlp.c_fc.bias)
    model.lm_head.untie(model.wte.weight)
    fold_site(model.ln_f, model.lm_head.weight.T, model.lm_head.bias)  # logits = y Wᵀ + b: W.T is [d, V]
    return model
