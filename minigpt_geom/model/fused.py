"""The fast path: fused kernels for the math that sphere.py, attention.py and block.py write out step by step.

`Kernels` names the steps that have two implementations; `FUSED` is the set of this file's kernels, and
kernels.py pairs it with the reference set. Each model chooses its set (`model.kernels = "reference"`, or
`with minigpt_geom.reference_math(): ...` for every model in the block); its forward pass reads the choice once
and hands the set to each step, which calls e.g. `kernels.attend(q, k, v)`.

Each kernel here computes exactly what the reference function it replaces computes (tests hold the two to
1e-5); it is faster because it fuses steps or never stores the [T, S] attention pattern. The block sizes below
were tuned by measurement: bench/NOTES.md has the figures and the commands that give them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .dropout import dropout

# (entropy, max weight, first-key weight) of each query's pattern, each [B, H, T]
Summaries = tuple[Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class Kernels:
    """One implementation of each step that has two: the reference math (kernels.REFERENCE) or fused kernels."""

    name: str
    sphere_projection: Callable[[Tensor, float], Tensor]  # layer norm's steps 1-2: centre, normalise (sphere.py)
    gelu: Callable[[Tensor], Tensor]  # GPT-2's tanh GELU (block.py)
    # (q, k, v, dropout p) -> Σ_j dropout(a)_ij v_j, causal (attention.py); p = 0: no dropout
    attend: Callable[[Tensor, Tensor, Tensor, float], Tensor]
    # (q, k, v, keep pattern, dropout p) -> (Σ_j dropout(a)_ij v_j, summaries of a, a [B, H, T, S] if kept else None)
    attend_traced: Callable[[Tensor, Tensor, Tensor, bool, float], tuple[Tensor, Summaries, Tensor | None]]


# ---- sphere.py: steps 1-2 of layer norm ------------------------------------------------------------


def layer_norm(x: Tensor, eps: float) -> Tensor:
    """normalise(centre(x), eps) in one kernel (float32 μ and σ for half-precision rows)."""
    return F.layer_norm(x, x.shape[-1:], eps=eps)


# ---- block.py: GELU ---------------------------------------------------------------------------------

GELU_SCALE = 2 * math.sqrt(2 / math.pi)


def gelu(u: Tensor) -> Tensor:
    """GPT-2's tanh GELU as u · σ(2√(2/π)(u + 0.044715u³)), since ½(1 + tanh z) = σ(2z); in-place steps."""
    z = u.square().mul_(0.044715 * GELU_SCALE).add_(GELU_SCALE).mul_(u)  # 2√(2/π)(u + 0.044715u³)
    return u * torch.sigmoid(z)  # not in place: autograd keeps σ(z) for the backward pass


# ---- attention.py: causal attention, untraced and traced --------------------------------------------


def attend(q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> Tensor:
    """dropout(softmax(mask(q kᵀ/√d_head))) v by `F.scaled_dot_product_attention`, which drops the weights with
    probability dropout_p itself (scaling the rest by 1/(1 − p), as dropout.py): [B, H, T, d_head]."""
    T, S = q.shape[-2], k.shape[-2]
    if T == S:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
    if T == 1:  # one new query with a KV cache sees every key
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


QUERY_BLOCK = 64  # queries scored at a time on a CPU: a block's float32 pattern stays in cache across its passes
GPU_BLOCK_SCORES = 2**24  # on a GPU, scores a block needs so that each of its kernels hides its launch


def query_block(q: Tensor, S: int) -> int:
    """Queries scored at a time: QUERY_BLOCK on a CPU; on a GPU, enough for GPU_BLOCK_SCORES scores a block."""
    if q.device.type == "cpu":
        return QUERY_BLOCK
    B, H = q.shape[:2]
    return max(QUERY_BLOCK, GPU_BLOCK_SCORES // (B * H * S))


def pattern_summaries(pattern: Tensor, scores: Tensor) -> Summaries:
    """(entropy, max weight, first-key weight) of each row of a = softmax(s), without a log pass over a.

    log a_ij = s_ij − lse_i, so −Σ_j a_ij log a_ij = lse_i − Σ_j a_ij s_ij, and the largest weight gives lse_i:
    max_j a_ij = exp(max_j s_ij − lse_i). Masked scores must be finite (the most negative float, not −∞) so
    that their terms a_ij s_ij are 0. The error is about 2e-7·max|s_ij| nats in float32."""
    max_weight = pattern.amax(dim=-1)
    scores = scores.float()  # a no-op for float32; half-precision scores are summed in float32
    log_normaliser = scores.amax(dim=-1) - max_weight.log()  # lse_i = max_j s_ij − log max_j a_ij
    expected_score = torch.einsum("...j,...j->...", pattern, scores)  # Σ_j a_ij s_ij, one pass (no a⊙s)
    return log_normaliser - expected_score, max_weight, pattern[..., 0]


def attend_traced(q: Tensor, k: Tensor, v: Tensor, keep_patterns: bool, dropout_p: float = 0.0
                  ) -> tuple[Tensor, Summaries, Tensor | None]:
    """(Σ_j dropout(a)_ij v_j, (entropy, max weight, first-key weight), the pattern a if kept), a block of queries
    at a time; the summaries and the kept pattern are a's, before dropout.

    Each block is scored against only the keys it can see (causal attention needs half of the T×S scores),
    in float32; no [B, H, T, S] tensor is built unless the pattern is kept."""
    T, S = q.shape[-2], k.shape[-2]
    q = q / math.sqrt(q.shape[-1])  # scaling q touches T·d_head numbers, not T·S
    kept = q.new_empty(*q.shape[:-1], S, dtype=torch.float32) if keep_patterns else None  # [B, H, T, S]
    outputs, summaries, block = [], [], query_block(q, S)
    for start in range(0, T, block):
        stop = min(start + block, T)
        rows, visible = stop - start, S - T + stop  # query stop−1 sees keys 0 … visible−1, the block's last key
        scores = q[..., start:stop, :] @ k[..., :visible, :].transpose(-2, -1)  # s_ij, [B, H, rows, visible]
        # Only the block's diagonal square (its last `rows` keys) is masked for some of its queries: j > i.
        above_diagonal = torch.ones(rows, rows, dtype=torch.bool, device=q.device).triu(diagonal=1)
        scores[..., visible - rows:].masked_fill_(above_diagonal, torch.finfo(scores.dtype).min)
        pattern = torch.softmax(scores, dim=-1, dtype=torch.float32)
        outputs.append(dropout(pattern, dropout_p).to(v.dtype) @ v[..., :visible, :])
        summaries.append(pattern_summaries(pattern, scores))
        if keep_patterns:
            kept[..., start:stop, :visible] = pattern
            kept[..., start:stop, visible:] = 0  # keys no query of the block sees
    entropy, max_weight, first = (torch.cat(parts, dim=-1) for parts in zip(*summaries))
    return torch.cat(outputs, dim=-2), (entropy, max_weight, first), kept


FUSED = Kernels("fused", layer_norm, gelu, attend, attend_traced)
