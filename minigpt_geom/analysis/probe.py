"""Experiment 2: probe a block's heads with single words (Traveling Words, the common-noun tables).

Ẽ = ln_1(E) puts the whole vocabulary on the block's ellipsoid. For a word n and head h (no positions):

    query-key   s_j = Ẽ[n] W_QK^h Ẽ_jᵀ                   which words n attends to, biases left out: this is
                                                          the score head h gives key word j from query word n
    key-value   u_h = Ẽ[n] W_VO^h + b_V^h W_O^h           what h writes when it attends to n alone
                logits = ln_f(E[n] + u_h + b_O) Eᵀ        a logit lens of the one-word residual stream

For each, the top k words; key-value also for the sum of all heads (u = Σ_h u_h) and the norms ‖u_h‖.
The query-key "sum" row (not in the paper) ranks by Σ_h s_j^h, the form Σ_h W_QK^h.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import torch
from torch import Tensor

from ..errors import InputError
from ..model import GPT2
from .circuits import (HeadWeights, block_heads, check_block, check_unfolded, ln_1_embeddings, query_key_matrix,
                       value_bias_output, value_output_matrix)
from .lens import lens_logits

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

PAPER_BLOCKS = (0, 5, 11)
QUERY_KEY, KEY_VALUE = "query-key", "key-value"


@dataclass(frozen=True)
class ProbeRow:
    """One word's best matches under one head (head None: the block's heads summed)."""

    probe: str  # QUERY_KEY or KEY_VALUE
    layer: int
    head: int | None
    word: str
    token: int
    matches: tuple[int, ...]  # the top-k tokens, best first
    scores: tuple[float, ...]  # their scores (query-key) or logits (key-value)
    update_norm: float | None = None  # ‖u_h‖ (key-value only)


def default_blocks(n_layer: int) -> list[int]:
    """The paper's blocks 0, 5, 11, clipped to the blocks this model has."""
    return sorted({min(b, n_layer - 1) for b in PAPER_BLOCKS})


def single_token_words(tokenizer: Tokenizer, words: Iterable[str], *, leading_space: bool = False
                       ) -> tuple[list[tuple[str, int]], list[str]]:
    """Split words into (word, token) pairs that encode to one token, and the dropped rest."""
    kept, dropped = [], []
    for word in words:
        ids = tokenizer.encode(" " + word if leading_space else word)
        if len(ids) == 1:
            kept.append((word, ids[0]))
        else:
            dropped.append(word)
    return kept, dropped


def query_key_scores(w: HeadWeights, sphere: Tensor, tokens: Tensor) -> Tensor:
    """s[i, j] = Ẽ[t_i] W_QK Ẽ_jᵀ, no biases, no positions: [n, V] for tokens [n] and Ẽ [V, d]."""
    queries = sphere[tokens] @ query_key_matrix(w)  # [n, d]: each query word as a direction on the sphere
    return queries @ sphere.T


def value_updates(w: HeadWeights, sphere: Tensor, tokens: Tensor) -> Tensor:
    """u_h = Ẽ[t] W_VO + b_V W_O: what the head writes for each key word attended to alone, [n, d]."""
    return sphere[tokens] @ value_output_matrix(w) + value_bias_output(w)


def check_words(words: Sequence[tuple[str, int]]) -> None:
    """Raise InputError if there is no word to probe."""
    if not words:
        raise InputError("no word to probe: none of the words is a single token for this tokenizer")


def _rows(probe: str, layer: int, head: int | None, words: Sequence[tuple[str, int]], scores: Tensor, k: int,
          norms: Tensor | None = None) -> list[ProbeRow]:
    """The top-k rows of scores [n, V], one per word."""
    top = scores.topk(min(k, scores.shape[1]), dim=1)
    return [
        ProbeRow(probe, layer, head, word, token, tuple(top.indices[i].tolist()), tuple(top.values[i].tolist()),
                 None if norms is None else norms[i].item())
        for i, (word, token) in enumerate(words)
    ]


@torch.inference_mode()
def query_key_probe(model: GPT2, layer: int, words: Sequence[tuple[str, int]], k: int = 5) -> list[ProbeRow]:
    """For each head of block `layer` (then their sum), the k key words each query word scores highest."""
    check_block(model, layer)
    check_words(words)
    sphere = ln_1_embeddings(model, layer)  # Ẽ [V, d]
    tokens = torch.tensor([t for _, t in words], device=sphere.device)
    rows, total = [], 0
    for w in block_heads(model, layer):
        scores = query_key_scores(w, sphere, tokens)  # [n, V]
        total = total + scores
        rows += _rows(QUERY_KEY, layer, w.head, words, scores, k)
    return rows + _rows(QUERY_KEY, layer, None, words, total, k)


@torch.inference_mode()
def key_value_probe(model: GPT2, layer: int, words: Sequence[tuple[str, int]], k: int = 5) -> list[ProbeRow]:
    """For each head of block `layer` (then their sum), the k words a logit lens reads after its update."""
    check_block(model, layer)
    check_words(words)
    check_unfolded(model)
    sphere = ln_1_embeddings(model, layer)
    tokens = torch.tensor([t for _, t in words], device=sphere.device)
    embedded = model.wte.weight[tokens]  # E[n] [n, d]: a one-word residual stream (no position)
    heads = block_heads(model, layer)
    rows, total = [], 0
    for w in heads:
        update = value_updates(w, sphere, tokens)  # u_h [n, d]
        total = total + update
        logits = lens_logits(model, embedded + update + w.b_O)  # ln_f(E[n] + u_h + b_O) Eᵀ
        rows += _rows(KEY_VALUE, layer, w.head, words, logits, k, update.norm(dim=1))
    logits = lens_logits(model, embedded + total + heads[0].b_O)
    return rows + _rows(KEY_VALUE, layer, None, words, logits, k, total.norm(dim=1))


def probe_blocks(model: GPT2, blocks: Sequence[int] | None, words: Sequence[tuple[str, int]], k: int = 5
                 ) -> list[ProbeRow]:
    """Both probes for every block (default: the paper's, clipped), query-key rows first in each block."""
    blocks = default_blocks(model.config.n_layer) if blocks is None else list(blocks)
    for layer in blocks:
        check_block(model, layer)
    rows = []
    for layer in blocks:
        rows += query_key_probe(model, layer, words, k) + key_value_probe(model, layer, words, k)
    return rows
