"""Attention scoring: how words on the sphere pull on each other (Traveling Words, section 2).

For head h, query position i and key position j (row vectors, x̂ = LN(x)):
    q_i = x̂_i W_Q^h + b_Q^h,   k_j = x̂_j W_K^h + b_K^h,   v_j = x̂_j W_V^h + b_V^h
    s_ij = q_i · k_j / √d_head,   masked to j ≤ i,   a_ij = softmax_j(s_ij)
    head_h(x̂)_i = Σ_j a_ij v_j;  output = concat_h(head_h) W_O + b_O
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .linear import Affine


@dataclass(frozen=True)
class AttentionDiagnostics:
    """How each query spreads its attention; fields [B, H, T] (pattern [B, H, T, S], S = key positions)."""

    entropy: Tensor  # −Σ_j a_ij log a_ij, nats: 0 = one key, log(i+1) = uniform over the visible keys
    max_weight: Tensor  # max_j a_ij
    first_token_weight: Tensor  # a_i0, the weight on the first position (the "attention sink")
    pattern: Tensor | None = None  # a_ij itself, when keep_attention=True


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
    scores = (q / math.sqrt(q.shape[-1])) @ k.transpose(-2, -1)  # scaling q touches T·d_head numbers, not T·S
    return scores.masked_fill_(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))


def attention_pattern(q: Tensor, k: Tensor) -> Tensor:
    """a_ij = softmax_j(s_ij): [B, H, T, S], each row sums to 1 over the visible keys."""
    return torch.softmax(attention_scores(q, k), dim=-1)


def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Σ_j a_ij v_j for causal attention: [B, H, T, d_head].

    `F.scaled_dot_product_attention` computes exactly `attention_pattern(q, k) @ v` in one fused kernel
    (tests check the two agree); it is used because it never stores the [T, S] pattern."""
    T, S = q.shape[-2], k.shape[-2]
    if T == S:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if T == 1:  # one new query with a KV cache sees every key
        return F.scaled_dot_product_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, S, q.device))


QUERY_BLOCK = 128  # queries summarised at a time: the [rows, S] scores stay in cache


def attention_diagnostics(q: Tensor, k: Tensor, keep_attention: bool = False) -> AttentionDiagnostics:
    """Summaries of each query's attention distribution a_i· (q [B, H, T, d_head], k [B, H, S, d_head]).

    Computed a block of queries at a time, each block against only the keys it can see: causal
    attention needs on average half of the T×S scores, and no [B, H, T, S] tensor is built unless kept."""
    T, S = q.shape[-2], k.shape[-2]
    entropy, max_weight, first, patterns = [], [], [], []
    for start in range(0, T, QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, T)
        visible = S - T + stop  # query stop−1 sees keys 0 … visible−1; later keys are masked for the whole block
        pattern = attention_pattern(q[..., start:stop, :], k[..., :visible, :])  # [B, H, rows, visible]
        # −Σ a log a; clamping a = 0 (masked keys) to the tiniest float makes its term 0·log(tiny) = 0, not NaN
        # (5x faster on CPU than torch.special.entr, which is not vectorised)
        log_pattern = pattern.clamp_min(torch.finfo(pattern.dtype).tiny).log()
        entropy.append(-(pattern * log_pattern).sum(dim=-1))
        max_weight.append(pattern.amax(dim=-1))
        first.append(pattern[..., 0])
        if keep_attention:
            patterns.append(F.pad(pattern, (0, S - visible)))  # masked keys have weight 0
    return AttentionDiagnostics(
        entropy=torch.cat(entropy, dim=-1),
        max_weight=torch.cat(max_weight, dim=-1),
        first_token_weight=torch.cat(first, dim=-1),
        pattern=torch.cat(patterns, dim=-2) if keep_attention else None,
    )


@dataclass
class KVCache:
    """Keys and values of the positions seen so far (generation): per layer, buffers [B, H, n_ctx, d_head]
    allocated once on first use and filled up to `length`, so a step writes only its own position."""

    keys: list[Tensor] = field(default_factory=list)
    values: list[Tensor] = field(default_factory=list)
    length: int = 0  # positions cached; the model advances it after each forward pass

    def extend(self, layer: int, k: Tensor, v: Tensor, capacity: int) -> tuple[Tensor, Tensor]:
        """Store the new positions' k, v [B, H, T, d_head] after the cached ones; return all [B, H, length+T, d_head]."""
        if layer == len(self.keys):  # first pass through this layer: room for the whole context
            shape = (*k.shape[:2], capacity, k.shape[-1])
            self.keys.append(k.new_empty(shape))
            self.values.append(v.new_empty(shape))
        end = self.length + k.shape[-2]
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class SelfAttention(nn.Module):
    """Multi-head causal self-attention; weights in GPT-2's layout (c_attn = [W_Q | W_K | W_V], c_proj = W_O)."""

    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = Affine(d, 3 * d)
        self.c_proj = Affine(d, d)

    def forward(
        self,
        x_hat: Tensor,
        *,
        trace: bool = False,
        keep_attention: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
        capacity: int = 0,
    ) -> tuple[Tensor, AttentionDiagnostics | None]:
        """x̂ [B, T, d] -> (attention update [B, T, d], diagnostics or None).

        With a cache, x̂ holds only new positions; their keys and values join the cached ones (layer `layer`,
        room for `capacity` positions) and the queries attend over all of them."""
        q, k, v = (split_heads(part, self.n_head) for part in self.c_attn(x_hat).chunk(3, dim=-1))
        if cache is not None:
            k, v = cache.extend(layer, k, v, capacity)
        update = self.c_proj(merge_heads(attend(q, k, v)))
        diagnostics = attention_diagnostics(q, k, keep_attention) if trace else None
        return update, diagnostics
