"""A head's strongest query-key word pairs over the whole vocabulary (Dar et al. 2022: E W Eᵀ, top pairs).

For head h of block l, every word as query against every word as key:

    s(q, k) = x̂_q W_QK x̂_kᵀ = (x̂_q W_Q)(x̂_k W_K)ᵀ / √d_h                  [V, V]
    with biases:   (x̂_q W_Q + b_Q)(x̂_k W_K + b_K)ᵀ / √d_h
    x̂_w = ln_1(E_w), or ln_1(E_w + P_pos) at a chosen position

For GPT-2 that is V² ≈ 2.5·10⁹ scores (10 GB in float32), so the V × V matrix is never formed: queries are
taken in chunks of `chunk_size` rows ([chunk_size, V] scores, a product of two thin matrices), and only the
rows that can still beat the running top k are searched and merged into it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

from ..errors import InputError
from ..model.gpt2 import GPT2
from .circuits import head_weights, ln_1_embeddings
from .tables import Table, token_label

if TYPE_CHECKING:
    from tqdm import tqdm

    from ..text.tokenizer import Tokenizer


@dataclass(frozen=True)
class WordPair:
    """A query word, a key word and the score the head gives the pair."""

    query: int
    key: int
    score: float


def check_position(model: GPT2, position: int | None, side: str) -> None:
    """Raise InputError unless `position` is None or inside the context."""
    n = model.config.n_ctx
    if position is not None and not 0 <= position < n:
        raise InputError(f"{side} position {position} is outside the context of {n} positions (0..{n - 1})")


@torch.inference_mode()
def query_key_sides(model: GPT2, layer: int, head: int, *, biases: bool = False, query_position: int | None = None,
                    key_position: int | None = None, vocab_limit: int | None = None) -> tuple[Tensor, Tensor]:
    """(queries [V, d_h], keys [V, d_h]) with queries @ keys.T = the head's score of every (query, key) word pair."""
    w = head_weights(model, layer, head)
    check_position(model, query_position, "query")
    check_position(model, key_position, "key")
    if query_position is not None and key_position is not None and key_position > query_position:
        raise InputError(f"key position {key_position} is after query position {query_position}: "
                         f"a causal head never sees it")
    queries = ln_1_embeddings(model, layer, query_position, vocab_limit) @ w.W_Q  # [V, d_h]
    keys = ln_1_embeddings(model, layer, key_position, vocab_limit) @ w.W_K
    if biases:
        queries, keys = queries + w.b_Q, keys + w.b_K
    return queries / math.sqrt(w.head_dim), keys


PAIR_BYTES = 3 * (4 + 8) + 200  # a pair in the running top k, its candidate and kept copies, then a WordPair


def top_pairs_bytes(n_words: int, k: int, chunk_size: int, element_size: int = 4) -> int:
    """About the memory top_pairs needs for n_words query and key words: the [chunk, V] scores (and top-k's
    temporaries, thrice), each chunk's rows' top k (value and index), and the k pairs kept, as tensors and as
    Python objects. k beyond V² is V² (there are no more pairs)."""
    k = min(k, n_words * n_words)
    chunk = min(chunk_size, n_words)
    return 3 * chunk * n_words * element_size + chunk * min(k, n_words) * (4 + 8) + k * PAIR_BYTES


def top_pairs(queries: Tensor, keys: Tensor, k: int = 20, chunk_size: int = 512, progress: tqdm | None = None
              ) -> list[WordPair]:
    """The k largest entries of queries @ keys.T, computed chunk by chunk of queries (never the full matrix).

    An entry of the overall top k is in its row's top k, and a row whose best entry does not beat the k-th best
    score found so far has nothing to add; so each chunk costs one product, one row maximum and a top k of
    the few rows that can still contribute. `progress` advances by the query words of each chunk."""
    n_queries, n_keys = queries.shape[0], keys.shape[0]
    k = min(k, n_queries * n_keys)
    best_scores = queries.new_empty(0)  # the running top k, any order
    best_index = torch.empty(0, dtype=torch.long, device=queries.device)  # their flat indices q·n_keys + key
    keys_t = keys.T.contiguous()  # [d_h, V]
    buffer = queries.new_empty(min(chunk_size, n_queries), n_keys)  # reused: a fresh 100 MB chunk each time is slower
    for start in range(0, n_queries, chunk_size):
        chunk = queries[start:start + chunk_size]
        scores = torch.mm(chunk, keys_t, out=buffer[:chunk.shape[0]])  # [chunk, V]
        threshold = best_scores.min() if best_scores.numel() == k else float("-inf")
        rows = (scores.amax(dim=1) > threshold).nonzero().squeeze(1)  # rows that can still enter the top k
        if rows.numel():
            top = scores[rows].topk(min(k, n_keys), dim=1)  # [rows, k]: each row's own top k
            candidates = torch.cat([best_scores, top.values.flatten()])
            indices = torch.cat([best_index, ((start + rows)[:, None] * n_keys + top.indices).flatten()])
            keep = candidates.topk(min(k, candidates.numel())).indices
            best_scores, best_index = candidates[keep], indices[keep]
        if progress is not None:
            progress.update(chunk.shape[0])
    order = best_scores.argsort(descending=True)
    return [WordPair(int(i) // n_keys, int(i) % n_keys, float(s))
            for s, i in zip(best_scores[order], best_index[order])]


@torch.inference_mode()
def strongest_pairs(model: GPT2, layer: int, head: int, k: int = 20, *, biases: bool = False,
                    query_position: int | None = None, key_position: int | None = None, chunk_size: int = 512,
                    vocab_limit: int | None = None, progress: tqdm | None = None, allowed: Tensor | None = None
                    ) -> list[WordPair]:
    """The k (query word, key word) pairs head `head` of layer `layer` scores highest, best first; both words
    among the `allowed` ones [V] when given (vocabulary.allowed_words)."""
    if k < 1 or chunk_size < 1:
        raise InputError(f"k and chunk size must be positive, got k={k}, chunk size={chunk_size}")
    queries, keys = query_key_sides(model, layer, head, biases=biases, query_position=query_position,
                                    key_position=key_position, vocab_limit=vocab_limit)
    if allowed is None:
        return top_pairs(queries, keys, k, chunk_size, progress)
    ids = allowed[:queries.shape[0]].nonzero().squeeze(1).to(queries.device)  # the words that may take part
    pairs = top_pairs(queries[ids], keys[ids], k, chunk_size, progress)
    return [WordPair(int(ids[p.query]), int(ids[p.key]), p.score) for p in pairs]


def pairs_caption(layer: int, head: int, n_pairs: int, *, biases: bool = False, query_position: int | None = None,
                  key_position: int | None = None, vocab_limit: int | None = None) -> str:
    """What a table of strongest_pairs shows, in words."""
    setting = ", ".join(filter(None, [
        "with biases" if biases else "no biases",
        f"query position {query_position}" if query_position is not None else "",
        f"key position {key_position}" if key_position is not None else "",
        f"first {vocab_limit} words" if vocab_limit else "",
    ]))
    return f"layer {layer}, head {head}: top {n_pairs} query-key pairs ({setting})"


def pairs_table(pairs: Sequence[WordPair], tokenizer: Tokenizer, caption: str = "") -> Table:
    """Rank, query word, key word, score."""
    return Table(["rank", "query", "key", "score"],
                 [[i, token_label(tokenizer, p.query), token_label(tokenizer, p.key), p.score]
                  for i, p in enumerate(pairs, start=1)], caption)  # rank 1: the strongest pair


def pairs_csv_table(pairs: Sequence[WordPair], tokenizer: Tokenizer) -> Table:
    """The pairs with their token ids and texts, for the CSV file."""
    return Table(["rank", "query", "query_text", "key", "key_text", "score"],
                 [[i, p.query, tokenizer.decode([p.query]), p.key, tokenizer.decode([p.key]), p.score]
                  for i, p in enumerate(pairs, start=1)])
