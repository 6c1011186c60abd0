"""Attention scoring: how words on the sphere pull on each other (Traveling Words, section 2).

For head h, query position i and key position j (row vectors, x̂ = LN(x)):
    q_i = x̂_i W_Q^h + b_Q^h,   k_j = x̂_j W_K^h + b_K^h,   v_j = x̂_j W_V^h + b_V^h
    s_ij = q_i · k_j / √d_head,   masked to j ≤ i,   a_ij = softmax_j(s_ij)
    head_h(x̂)_i = Σ_j a_ij v_j;  output = concat_h(head_h) W_O + b_O
In training with dropout p (dropout.py) the sum reads dropout(a)_ij: each weight zeroed with probability p, the
rest scaled by 1/(1 − p); the diagnostics describe a itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .dropout import dropout
from .editing import NO_EDITS, LayerEdits, NoEdits
from .fused import FUSED, Kernels, Summaries
from .linear import Affine

if TYPE_CHECKING:
    from .cache import LayerCache
    from .trace_request import TraceRequest

# ---- the math -----------------------------------------------------------------------------------


def split_heads(x: Tensor, n_head: int) -> Tensor:
    """[B, T, H·d_head] -> [B, H, T, d_head]."""
    B, T, d = x.shape
    return x.view(B, T, n_head, d // n_head).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[B, H, T, d_head] -> [B, T, H·d_head]."""
    B, H, T, dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * dh)


def causal_mask(T: int, S: int, device: torch.device | None = None) -> Tensor:
    """[T, S] bool, True where query i (the last T of S positions) may see key j: j ≤ i + (S − T)."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


def attention_scores(q: Tensor, k: Tensor) -> Tensor:
    """s_ij = q_i·k_j/√d_head, −∞ where j > i: [B, H, T, d_head] × [B, H, S, d_head] -> [B, H, T, S]."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))


def attention_pattern(q: Tensor, k: Tensor) -> Tensor:
    """a_ij = softmax_j(s_ij): [B, H, T, S] in float32, each row sums to 1 over the visible keys."""
    return torch.softmax(attention_scores(q, k), dim=-1, dtype=torch.float32)


def attend(q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> Tensor:
    """Σ_j a_ij v_j for causal attention, a dropped out with probability dropout_p (training): [B, H, T, d_head]."""
    return dropout(attention_pattern(q, k), dropout_p).to(v.dtype) @ v


# ---- diagnostics: the same sum, with the pattern in hand ------------------------------------------


@dataclass(frozen=True)
class AttentionDiagnostics:
    """How each query spreads its attention; fields [B, H, T] (pattern [B, H, T, S], S = key positions)."""

    entropy: Tensor  # −Σ_j a_ij log a_ij, nats: 0 = one key, log(i+1) = uniform over the visible keys
    max_weight: Tensor  # max_j a_ij
    first_token_weight: Tensor  # a_i0, the weight on the first position (the "attention sink")
    pattern: Tensor | None = None  # a_ij itself, when the trace asks for patterns


def attend_traced(q: Tensor, k: Tensor, v: Tensor, keep_patterns: bool, dropout_p: float = 0.0
                  ) -> tuple[Tensor, Summaries, Tensor | None]:
    """`attend`, with the pattern a = softmax(s) summarised per query: (entropy, max weight, first-key weight),
    and a itself [B, H, T, S] if asked to keep it (both before dropout)."""
    a = attention_pattern(q, k)  # [B, H, T, S], 0 on the masked keys
    return dropout(a, dropout_p).to(v.dtype) @ v, pattern_summaries(a), a if keep_patterns else None


def pattern_summaries(a: Tensor) -> Summaries:
    """(entropy −Σ_j a_ij log a_ij with 0 log 0 = 0, max_j a_ij, a_i0) of each query's pattern a [..., S]."""
    return -torch.special.xlogy(a, a).sum(dim=-1), a.amax(dim=-1), a[..., 0]


def head_writes(heads: Tensor, W_O: Tensor) -> Tensor:
    """Each head's write into the residual, z_h W_O^h: [B, H, T, d_head] × [H·d_head, d] -> [B, H, T, d]."""
    H, d_head = heads.shape[1], heads.shape[-1]
    return torch.einsum("bhtk,hkd->bhtd", heads, W_O.view(H, d_head, -1))


# ---- the module -----------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head causal self-attention; weights in GPT-2's layout (c_attn = [W_Q | W_K | W_V], c_proj = W_O)."""

    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = Affine(d, 3 * d)
        self.c_proj = Affine(d, d)

    def forward(self, x_hat: Tensor, trace: TraceRequest | None = None, cache: LayerCache | None = None,
                kernels: Kernels = FUSED, edits: LayerEdits | NoEdits = NO_EDITS, dropout_p: float = 0.0
                ) -> tuple[Tensor, AttentionDiagnostics | None]:
        """x̂ [B, T, d] -> (attention update [B, T, d], diagnostics when tracing, else None).

        With a cache, x̂ holds only the new positions; their keys and values join the cached ones. `dropout_p`:
        the probability each attention weight is dropped (training mode only; 0 otherwise)."""
        q, k, v = (split_heads(part, self.n_head) for part in self.c_attn(x_hat).chunk(3, dim=-1))
        if cache is not None:
            k, v = cache.append(k, v)
        if edits.touches("pattern"):  # the pattern is edited or kept: formed explicitly, whichever the kernel set
            pattern = edits.apply("pattern", attention_pattern(q, k))
            heads = dropout(pattern, dropout_p).to(v.dtype) @ v
            summaries = pattern_summaries(pattern) if trace is not None else None
        elif trace is None:
            heads, summaries, pattern = kernels.attend(q, k, v, dropout_p), None, None
        else:
            heads, summaries, pattern = kernels.attend_traced(q, k, v, trace.patterns, dropout_p)
        heads = edits.apply("head_out", heads)
        if edits.touches("head_write"):  # each head's write, edited or kept before the writes are summed
            update = edits.apply("head_write", head_writes(heads, self.c_proj.weight)).sum(dim=1) + self.c_proj.bias
        else:
            update = self.c_proj(merge_heads(heads))
        if trace is None:
            return update, None
        return update, AttentionDiagnostics(*summaries, pattern if trace.patterns else None)
