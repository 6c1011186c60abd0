"""Experiment 2: probe a layer's heads with single words (Traveling Words, the common-noun tables).

Ẽ = ln_1(E) puts the whole vocabulary on the layer's ellipsoid. For a word n and head h (no positions):

    query-key   q_h = Ẽ[n] W_QK^h                         the query direction of word n
                s_j = q_h · Ẽ_j                            the score head h gives key word j, biases left out
    key-value   u_h = Ẽ[n] W_VO^h + b_V^h W_O^h           what h writes when it attends to n alone
                logits = ln_f(E[n] + u_h + b_O) Eᵀ        a logit lens of the one-word residual stream

For each, the top k words and a norm: ‖q_h‖ (it scales every score of the word) or ‖u_h‖. Both probes also
have a row for the layer's heads together: the query-key "sum" ranks by Σ_h s_j^h, the form Σ_h W_QK^h (not
in the paper), with ‖Σ_h q_h‖; the key-value sum is u = Σ_h u_h, with ‖u‖.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import torch
from torch import Tensor

from ..errors import InputError
from ..model.gpt2 import GPT2
from .circuits import (HeadWeights, block_heads, check_layer, ln_1_embeddings, query_key_matrix,
                       value_bias_output, value_output_matrix)
from .lens import lens_logits
from .tables import Table, token_label
from .vocabulary import restrict

if TYPE_CHECKING:
    from tqdm import tqdm

    from ..text.tokenizer import Tokenizer

PAPER_LAYERS = (0, 5, 11)
QUERY_KEY, KEY_VALUE = "query-key", "key-value"
NORM_NAMES = {QUERY_KEY: "‖q‖", KEY_VALUE: "‖u‖"}
MATCHED = {QUERY_KEY: "keys Ẽ_j by Ẽ[n] W_QK Ẽ_jᵀ", KEY_VALUE: "words of ln_f(E[n] + u_h + b_O) Eᵀ"}


@dataclass(frozen=True)
class ProbeRow:
    """One word's best matches under one head (head None: the layer's heads summed)."""

    probe: str  # QUERY_KEY or KEY_VALUE
    layer: int
    head: int | None
    word: str
    token: int
    matches: tuple[int, ...]  # the top-k tokens, best first
    scores: tuple[float, ...]  # their scores (query-key) or logits (key-value)
    norm: float  # ‖q_h‖ (query-key) or ‖u_h‖ (key-value)


def default_layers(n_layer: int) -> list[int]:
    """The paper's layers 0, 5, 11, clipped to the layers this model has."""
    return sorted({min(layer, n_layer - 1) for layer in PAPER_LAYERS})


def single_token_words(tokenizer: Tokenizer, words: Iterable[str], *, leading_space: bool = False
                       ) -> tuple[list[tuple[str, int]], list[str]]:
    """Split words into (text, token) pairs that encode to one token, and the dropped rest. The text is what was
    probed: with leading_space, ' stone' for the word 'stone'."""
    kept, dropped = [], []
    for word in words:
        text = " " + word if leading_space else word
        ids = tokenizer.encode(text)
        if len(ids) == 1:
            kept.append((text, ids[0]))
        else:
            dropped.append(word)
    return kept, dropped


def query_directions(w: HeadWeights, E_tilde: Tensor, tokens: Tensor) -> Tensor:
    """q = Ẽ[t] W_QK: each query word as a direction on the ellipsoid, [n, d] for tokens [n] and Ẽ [V, d]."""
    return E_tilde[tokens] @ query_key_matrix(w)


def query_key_scores(w: HeadWeights, E_tilde: Tensor, tokens: Tensor) -> Tensor:
    """s[i, j] = Ẽ[t_i] W_QK Ẽ_jᵀ, no biases, no positions: [n, V] for tokens [n] and Ẽ [V, d]."""
    return query_directions(w, E_tilde, tokens) @ E_tilde.T


def value_updates(w: HeadWeights, E_tilde: Tensor, tokens: Tensor) -> Tensor:
    """u_h = Ẽ[t] W_VO + b_V W_O: what the head writes for each key word attended to alone, [n, d]."""
    return E_tilde[tokens] @ value_output_matrix(w) + value_bias_output(w)


def check_words(words: Sequence[tuple[str, int]]) -> None:
    """Raise InputError if there is no word to probe."""
    if not words:
        raise InputError("no word to probe: none of the words is a single token for this tokenizer")


def _rows(probe: str, layer: int, head: int | None, words: Sequence[tuple[str, int]], scores: Tensor, k: int,
          norms: Tensor, allowed: Tensor | None = None) -> list[ProbeRow]:
    """The top-k rows of scores [n, V] among the `allowed` words [V] (all by default), one per word, with each
    word's norm [n]."""
    top = restrict(scores, allowed).topk(min(k, scores.shape[1] if allowed is None else int(allowed.sum())), dim=1)
    return [
        ProbeRow(probe, layer, head, word, token, tuple(top.indices[i].tolist()), tuple(top.values[i].tolist()),
                 norms[i].item())
        for i, (word, token) in enumerate(words)
    ]


@torch.inference_mode()
def query_key_probe(model: GPT2, layer: int, words: Sequence[tuple[str, int]], k: int = 5,
                    allowed: Tensor | None = None) -> list[ProbeRow]:
    """For each head of layer `layer` (then their sum), the k key words each query word scores highest (among
    the `allowed` words, vocabulary.allowed_words; all by default)."""
    check_layer(model, layer)
    check_words(words)
    E_tilde = ln_1_embeddings(model, layer)  # Ẽ [V, d]
    tokens = torch.tensor([t for _, t in words], device=E_tilde.device)
    rows, total = [], 0
    for w in block_heads(model, layer):
        queries = query_directions(w, E_tilde, tokens)  # q_h [n, d]
        total = total + queries
        rows += _rows(QUERY_KEY, layer, w.head, words, queries @ E_tilde.T, k, queries.norm(dim=1), allowed)
    return rows + _rows(QUERY_KEY, layer, None, words, total @ E_tilde.T, k, total.norm(dim=1), allowed)


@torch.inference_mode()
def key_value_probe(model: GPT2, layer: int, words: Sequence[tuple[str, int]], k: int = 5,
                    allowed: Tensor | None = None) -> list[ProbeRow]:
    """For each head of layer `layer` (then their sum), the k words (of the `allowed` ones) a logit lens reads
    after its update."""
    check_layer(model, layer)
    check_words(words)
    E_tilde = ln_1_embeddings(model, layer)
    tokens = torch.tensor([t for _, t in words], device=E_tilde.device)
    embedded = model.wte.weight[tokens]  # E[n] [n, d]: a one-word residual stream (no position)
    heads = block_heads(model, layer)
    rows, total = [], 0
    for w in heads:
        update = value_updates(w, E_tilde, tokens)  # u_h [n, d]
        total = total + update
        logits = lens_logits(model, embedded + update + w.b_O)  # ln_f(E[n] + u_h + b_O) Eᵀ
        rows += _rows(KEY_VALUE, layer, w.head, words, logits, k, update.norm(dim=1), allowed)
    logits = lens_logits(model, embedded + total + heads[0].b_O)
    return rows + _rows(KEY_VALUE, layer, None, words, logits, k, total.norm(dim=1), allowed)


def probe_layers(model: GPT2, layers: Sequence[int] | None, words: Sequence[tuple[str, int]], k: int = 5,
                 progress: tqdm | None = None, allowed: Tensor | None = None) -> list[ProbeRow]:
    """Both probes for every layer (default: the paper's, clipped), query-key rows first in each layer.

    `progress` advances by one per layer probed."""
    layers = default_layers(model.config.n_layer) if layers is None else list(layers)
    for layer in layers:
        check_layer(model, layer)
    rows = []
    for layer in layers:
        rows += query_key_probe(model, layer, words, k, allowed) + key_value_probe(model, layer, words, k, allowed)
        if progress is not None:
            progress.update()
    return rows


def probe_tables(rows: Sequence[ProbeRow], tokenizer: Tokenizer, k: int) -> dict[str, Table]:
    """One table per layer and probe ("probe_layer0_query_key" -> Table): word, head, top matches, norm.

    Rows are ordered by word, then head, the sum last."""
    order = {word: i for i, word in enumerate(dict.fromkeys(r.word for r in rows))}
    rows = sorted(rows, key=lambda r: (order[r.word], r.head is None, r.head or 0))
    tables = {}
    for layer in dict.fromkeys(r.layer for r in rows):
        for probe in (QUERY_KEY, KEY_VALUE):
            chosen = [r for r in rows if r.layer == layer and r.probe == probe]
            tables[f"probe_layer{layer}_{probe.replace('-', '_')}"] = Table(
                ["word", "head", "top matches", NORM_NAMES[probe]],
                [[token_label(tokenizer, r.token), "sum" if r.head is None else r.head,
                  ", ".join(token_label(tokenizer, t) for t in r.matches),
                  r.norm] for r in chosen],
                f"layer {layer}, {probe} probe: top-{k} {MATCHED[probe]}")
    return tables


def probe_csv_table(rows: Sequence[ProbeRow], tokenizer: Tokenizer) -> Table:
    """Every match of every row, one line each: the long form for probe.csv."""
    return Table(["probe", "layer", "head", "word", "token", "norm", "rank", "match", "match_text", "score"],
                 [[r.probe, r.layer, "sum" if r.head is None else r.head, r.word, r.token, r.norm, rank, t,
                   tokenizer.decode([t]), s] for r in rows for rank, (t, s) in enumerate(zip(r.matches, r.scores))])
