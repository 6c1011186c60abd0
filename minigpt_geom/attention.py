"""Attention scoring: how words on the sphere pull on each other (Traveling Words, section 2).

For head h, query position i and key position j (row vectors, x̂ = LN(x)):
    q_i = x̂_i W_Q^h + b_Q^h,   k_j = x̂_j W_K^h + b_K^h,   v_j = x̂_j W_V^h + b_V^h
    s_ij = q_i · k_j / √d_head,   masked to j ≤ i,   a_ij = softmax_j(s_ij)
    head_h(x̂)_i = Σ_j a_ij v_j;  output = concat_h(head_h) W_O + b_O
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .linear import Affine

if TYPE_CHECKING:
    from .cache import LayerCache
    from .trace import TraceRequest

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
    scores = (q / math.sqrt(q.shape[-1])) @ k.transpose(-2, -1)  # scaling q touches T·d_head numbers, not T·S
    return scores.masked_fill_(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))


def attention_pattern(q: Tensor, k: Tensor) -> Tensor:
    """a_ij = softmax_j(s_ij): [B, H, T, S], each row sums to 1 over the visible keys (float32 statistics)."""
    return torch.softmax(attention_scores(q, k), dim=-1, dtype=torch.float32).to(q.dtype)


def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Σ_j a_ij v_j for causal attention: [B, H, T, d_head].

    `F.scaled_dot_product_attention` computes exactly `attention_pattern(q, k) @ v` in one fused kernel
    (tests check the two agree); it is the fast path because it never stores the [T, S] pattern."""
    T, S = q.shape[-2], k.shape[-2]
    if T == S:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if T == 1:  # one new query with a KV cache sees every key
        return F.scaled_dot_product_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, S, q.device))


# ---- diagnostics: the same sum, with the pattern in hand ------------------------------------------


@dataclass(frozen=True)
class AttentionDiagnostics:
    """How each query spreads its attention; fields [B, H, T] (pattern [B, H, T, S], S = key positions)."""

    entropy: Tensor  # −Σ_j a_ij log a_ij, nats: 0 = one key, log(i+1) = uniform over the visible keys
    max_weight: Tensor  # max_j a_ij
    first_token_weight: Tensor  # a_i0, the weight on the first position (the "attention sink")
    pattern: Tensor | None = None  # a_ij itself, when the trace asks for patterns


def pattern_summaries(pattern: Tensor, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(entropy, max weight, first-key weight) of each row of a = softmax(s): [..., S] twice -> three [...] tensors.

    The entropy needs no log pass over the pattern: log a_ij = s_ij − lse_i, so
        −Σ_j a_ij log a_ij = lse_i − Σ_j a_ij s_ij,
    and the largest weight gives lse_i for free: max_j a_ij = exp(max_j s_ij − lse_i). Masked scores must be
    finite (the most negative float, not −∞) so that their terms a_ij s_ij are 0·s_ij = 0. The subtraction
    costs float32 digits in proportion to the scores: the error is about 2e-7·max|s_ij| nats."""
    max_weight = pattern.amax(dim=-1)
    scores = scores.float()  # a no-op for float32; half-precision scores are summed in float32
    log_normaliser = scores.amax(dim=-1) - max_weight.log()  # lse_i = max_j s_ij − log max_j a_ij
    expected_score = torch.einsum("...j,...j->...", pattern, scores)  # Σ_j a_ij s_ij, one fused pass (no a⊙s)
    return log_normaliser - expected_score, max_weight, pattern[..., 0]


# Queries scored at a time on a CPU: 64 was the fastest of 32-256 at 1x1024, 8x128 and 1x512 on two CPUs (a
# block's float32 pattern [B, H, 64, S] is 3 MiB at B·H = 12, S = 1024, and stays in cache across its passes).
QUERY_BLOCK = 64
# On a GPU a block's dozen kernels must each have enough work to hide its launch: at least 2^24 scores (64 rows
# at 1x1024 are 0.8M; 16 such blocks a layer made a traced forward pass 4.5x slower than an untraced one on
# an H200, launch-bound). Larger blocks would only score more of the masked keys.
GPU_BLOCK_SCORES = 2**24


def query_block(q: Tensor, S: int) -> int:
    """Queries scored at a time: QUERY_BLOCK on a CPU; on a GPU, enough for GPU_BLOCK_SCORES scores a block."""
    if q.device.type == "cpu":
        return QUERY_BLOCK
    B, H = q.shape[:2]
    return max(QUERY_BLOCK, GPU_BLOCK_SCORES // (B * H * S))


def attend_traced(q: Tensor, k: Tensor, v: Tensor, keep_patterns: bool) -> tuple[Tensor, AttentionDiagnostics]:
    """`attend`, computed from the explicit pattern a = softmax(s) so that the pattern is also summarised.

    One pass per block of queries, against only the keys the block can see (causal attention needs half of
    the T×S scores): the block's pattern gives both its output a @ v and its summaries, in float32; no
    [B, H, T, S] tensor is built unless kept."""
    T, S = q.shape[-2], k.shape[-2]
    q = q / math.sqrt(q.shape[-1])  # scaling q touches T·d_head numbers, not T·S
    kept = q.new_empty(*q.shape[:-1], S, dtype=torch.float32) if keep_patterns else None  # [B, H, T, S]
    outputs, summaries, block = [], [], query_block(q, S)
    for start in range(0, T, block):
        stop = min(start + block, T)
        rows, visible = stop - start, S - T + stop  # query stop−1 sees keys 0 … visible−1, the block's last key
        scores = q[..., start:stop, :] @ k[..., :visible, :].transpose(-2, -1)  # s_ij, [B, H, rows, visible]
        # Every query of the block sees the keys before its own positions; only the last `rows` keys, the
        # block's diagonal square, are masked for some of its queries (j > i: the square's upper triangle).
        diagonal = scores[..., visible - rows:]
        diagonal.masked_fill_(~causal_mask(rows, rows, q.device), torch.finfo(scores.dtype).min)
        pattern = torch.softmax(scores, dim=-1, dtype=torch.float32)
        outputs.append(pattern.to(v.dtype) @ v[..., :visible, :])
        summaries.append(pattern_summaries(pattern, scores))
        if keep_patterns:
            kept[..., start:stop, :visible] = pattern
            kept[..., start:stop, visible:] = 0  # keys no query of the block sees
    entropy, max_weight, first = (torch.cat(parts, dim=-1) for parts in zip(*summaries))
    return torch.cat(outputs, dim=-2), AttentionDiagnostics(entropy, max_weight, first, kept)


# ---- the module -----------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head causal self-attention; weights in GPT-2's layout (c_attn = [W_Q | W_K | W_V], c_proj = W_O)."""

    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = Affine(d, 3 * d)
        self.c_proj = Affine(d, d)

    def forward(self, x_hat: Tensor, trace: TraceRequest | None = None, cache: LayerCache | None = None
                ) -> tuple[Tensor, AttentionDiagnostics | None]:
        """x̂ [B, T, d] -> (attention update [B, T, d], diagnostics when tracing, else None).

        With a cache, x̂ holds only the new positions; their keys and values join the cached ones."""
        q, k, v = (split_heads(part, self.n_head) for part in self.c_attn(x_hat).chunk(3, dim=-1))
        if cache is not None:
            k, v = cache.append(k, v)
        if trace is None:
            return self.c_proj(merge_heads(attend(q, k, v))), None
        heads, diagnostics = attend_traced(q, k, v, trace.patterns)
        return self.c_proj(merge_heads(heads)), diagnostics
