"""One attention head as two bilinear circuits (Traveling Words section 2; Elhage et al. 2021).

For head h of block l, with x̂ = ln_1(x) a point of the block's ellipsoid (row vectors, d_h = d_head):

    s_ij = (x̂_i W_Q + b_Q)(x̂_j W_K + b_K)ᵀ / √d_h
         =  x̂_i W_QK x̂_jᵀ                  bilinear: which regions of the ellipsoid attend to which
          + x̂_i · (W_Q b_Kᵀ / √d_h)          query-bias term: equal for every key, cancels in the softmax
          + (b_Q W_Kᵀ / √d_h) · x̂_j          key-bias term: some keys are preferred whatever the query
          + b_Q · b_K / √d_h                 constant: cancels in the softmax
    with W_QK = W_Q W_Kᵀ / √d_h                                           [d, d], rank ≤ d_h

    head_h(x̂)_i = Σ_j a_ij (x̂_j W_V + b_V) W_O = Σ_j a_ij (x̂_j W_VO + b_V W_O),   W_VO = W_V W_O [d, d]
    attention update = Σ_h head_h(x̂) + b_O

Weights are read from the model as stored (c_attn = [W_Q | W_K | W_V] by columns, c_proj = W_O with rows
h·d_h:(h+1)·d_h belonging to head h); nothing is copied into a new model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.attention import causal_mask
from ..errors import InputError
from ..model.gpt2 import GPT2


@dataclass(frozen=True)
class HeadWeights:
    """The parameters of head `head` in block `layer` (y = x W + b; d = width, d_h = head width)."""

    layer: int
    head: int
    W_Q: Tensor  # [d, d_h]
    W_K: Tensor  # [d, d_h]
    W_V: Tensor  # [d, d_h]
    W_O: Tensor  # [d_h, d]
    b_Q: Tensor  # [d_h]
    b_K: Tensor  # [d_h]
    b_V: Tensor  # [d_h]
    b_O: Tensor  # [d], the block's output bias: shared by all heads, added once per layer

    @property
    def head_dim(self) -> int:
        """d_h, the width of one head's queries, keys and values."""
        return self.W_Q.shape[1]


def check_layer(model: GPT2, layer: int) -> None:
    """Raise InputError unless layer (block) `layer` exists: the one check of a layer index."""
    n = model.config.n_layer
    if not 0 <= layer < n:
        raise InputError(f"layer {layer} does not exist: this model has {n} layers, 0..{n - 1}")


def check_head(model: GPT2, head: int) -> None:
    """Raise InputError unless head `head` exists: the one check of a head index."""
    n = model.config.n_head
    if not 0 <= head < n:
        raise InputError(f"head {head} does not exist: this model has {n} heads a layer, 0..{n - 1}")


def head_weights(model: GPT2, layer: int, head: int) -> HeadWeights:
    """Slice head `head` of block `layer` out of c_attn and c_proj (views, no copies).

    On a folded model these matrices hold ln_1's γ (and β in the biases), and x̂ is the bare projection: the
    scores s_ij are the same, split differently between the bilinear and the bias terms."""
    check_layer(model, layer)
    check_head(model, head)
    d, d_h = model.config.n_embd, model.config.head_dim
    attn = model.h[layer].attn
    W, b = attn.c_attn.weight.detach(), attn.c_attn.bias.detach()  # [d, 3d], [3d]
    cols = slice(head * d_h, (head + 1) * d_h)  # this head's columns inside each of the three d-wide parts
    return HeadWeights(
        layer=layer,
        head=head,
        W_Q=W[:, :d][:, cols],
        W_K=W[:, d:2 * d][:, cols],
        W_V=W[:, 2 * d:][:, cols],
        W_O=attn.c_proj.weight.detach()[cols, :],
        b_Q=b[:d][cols],
        b_K=b[d:2 * d][cols],
        b_V=b[2 * d:][cols],
        b_O=attn.c_proj.bias.detach(),
    )


def block_heads(model: GPT2, layer: int) -> list[HeadWeights]:
    """Every head of block `layer`."""
    return [head_weights(model, layer, h) for h in range(model.config.n_head)]


def query_key_matrix(w: HeadWeights) -> Tensor:
    """W_QK = W_Q W_Kᵀ / √d_h: [d, d], so that the bilinear score is x̂_i W_QK x̂_jᵀ."""
    return w.W_Q @ w.W_K.T / math.sqrt(w.head_dim)


def value_output_matrix(w: HeadWeights) -> Tensor:
    """W_VO = W_V W_O: [d, d], what the head writes for a key word it attends to fully (bias aside)."""
    return w.W_V @ w.W_O


def key_bias_direction(w: HeadWeights) -> Tensor:
    """b_Q W_Kᵀ / √d_h: [d]; the score of key x̂_j gains x̂_j · this, whatever the query."""
    return w.b_Q @ w.W_K.T / math.sqrt(w.head_dim)


def query_bias_direction(w: HeadWeights) -> Tensor:
    """b_K W_Qᵀ / √d_h: [d]; the score of query x̂_i gains x̂_i · this for every key (cancels in the softmax)."""
    return w.b_K @ w.W_Q.T / math.sqrt(w.head_dim)


def bias_bias_score(w: HeadWeights) -> Tensor:
    """b_Q · b_K / √d_h: a scalar added to every score (cancels in the softmax)."""
    return w.b_Q @ w.b_K / math.sqrt(w.head_dim)


def value_bias_output(w: HeadWeights) -> Tensor:
    """b_V W_O: [d], written whatever the keys (the attention weights sum to 1)."""
    return w.b_V @ w.W_O


def ln_1_embeddings(model: GPT2, layer: int, position: int | None = None, n_words: int | None = None) -> Tensor:
    """Ẽ = ln_1(E) of block `layer` (or ln_1(E + P[position])): the words as the block reads them, [V, d].

    The site's own module, whatever its variant: for layer norm γ ⊙ sphere point + β, a point of an ellipsoid;
    without normalisation E itself. The analyses call it E_tilde. n_words keeps only the first n words."""
    check_layer(model, layer)
    with torch.inference_mode():
        E = model.wte.weight[:n_words]
        return model.h[layer].ln_1(E if position is None else E + model.wpe.weight[position])[0]


@dataclass(frozen=True)
class ScoreTerms:
    """The four terms of s_ij for one head, each broadcastable to [..., T, S] (T queries, S keys)."""

    bilinear: Tensor  # x̂_i W_QK x̂_jᵀ                [..., T, S]
    query_bias: Tensor  # x̂_i · W_Q b_Kᵀ/√d_h          [..., T, 1]
    key_bias: Tensor  # b_Q W_Kᵀ/√d_h · x̂_j          [..., 1, S]
    constant: Tensor  # b_Q · b_K/√d_h                 []

    @property
    def total(self) -> Tensor:
        """s_ij, the head's pre-softmax score: [..., T, S]."""
        return self.bilinear + self.query_bias + self.key_bias + self.constant


def score_terms(w: HeadWeights, x_hat_query: Tensor, x_hat_key: Tensor) -> ScoreTerms:
    """Split the scores of queries x̂ [..., T, d] on keys x̂ [..., S, d] into the four terms."""
    return ScoreTerms(
        bilinear=x_hat_query @ query_key_matrix(w) @ x_hat_key.transpose(-2, -1),
        query_bias=(x_hat_query @ query_bias_direction(w)).unsqueeze(-1),
        key_bias=(x_hat_key @ key_bias_direction(w)).unsqueeze(-2),
        constant=bias_bias_score(w),
    )


def head_pattern(w: HeadWeights, x_hat: Tensor) -> Tensor:
    """The head's a_ij = softmax_j(s_ij), causally masked: x̂ = ln_1(x) [..., T, d] -> [..., T, T]."""
    T = x_hat.shape[-2]
    scores = score_terms(w, x_hat, x_hat).total.masked_fill(~causal_mask(T, T, x_hat.device), float("-inf"))
    return torch.softmax(scores, dim=-1)


def attention_update(model: GPT2, layer: int, x_hat: Tensor) -> Tensor:
    """Block `layer`'s attention update rebuilt from the circuits: x̂ = ln_1(x) [B, T, d] -> [B, T, d].

    Per head: the four score terms, causal mask, softmax, then Σ_j a_ij (x̂_j W_VO + b_V W_O); the heads'
    outputs are summed and b_O added once. Equals `model.h[layer].attn(x_hat)[0]` up to rounding."""
    update = torch.zeros_like(x_hat)
    heads = block_heads(model, layer)
    for w in heads:
        update = update + head_pattern(w, x_hat) @ (x_hat @ value_output_matrix(w) + value_bias_output(w))
    return update + heads[0].b_O
