"""Experiment 3: singular vectors of a head's circuits, read as words (Traveling Words; Millidge & Black 2022).

    W_QK = W_Q W_Kᵀ/√d_h = U diag(S) Vᵀ     query side U·S, key side V, both matched against Ẽ = ln_1(E)
    W_VO = W_V W_O       = U diag(S) Vᵀ     input side U·S against Ẽ, output side V against the unembedding
                                            (E, or the folded W: model.unembedding_rows)

Both matrices are d × d of rank ≤ d_h, so only the first d_h singular pairs mean anything. They are computed
from the thin factors (A Bᵀ with A, B [d, d_h]: QR of each, then the SVD of a d_h × d_h core), in float64.
A singular pair is defined up to a common sign; the sign rule (the paper's) makes the right vector's
largest-magnitude match positive: flip (u, v) -> (−u, −v) when max_j(−v·R_j) > max_j(v·R_j).
Each pair is read as the words with the largest dot product (left vector scaled by its singular value).

Bias probe: the key-bias direction b_Q W_Kᵀ/√d_h adds x̂_j · it to every score on key j, whatever the
query; its best (+) and worst (−) words against Ẽ are the keys the head favours and avoids by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
from torch import Tensor

from ..model.gpt2 import GPT2
from . import plots
from .circuits import HeadWeights, check_head, check_layer, head_weights, key_bias_direction, ln_1_embeddings
from .tables import Table, token_label
from .vocabulary import restrict

if TYPE_CHECKING:
    from tqdm import tqdm

    from ..text.tokenizer import Tokenizer

CIRCUITS = ("QK", "VO")


@dataclass(frozen=True)
class HeadSVD:
    """M = left_unit diag(S) rightᵀ for one head's W_QK or W_VO, signs fixed; float64."""

    layer: int
    head: int
    circuit: str  # "QK" or "VO"
    singular_values: Tensor  # S [r], r = d_h, descending
    left: Tensor  # U·diag(S) [d, r]: left singular vectors scaled by their singular values
    right: Tensor  # V [d, r]: right singular vectors (unit)


@dataclass(frozen=True)
class SingularPairWords:
    """Row of the paper's tables: a singular pair and its nearest words."""

    rank: int  # 1 = the largest singular value, as rank 1 is the top word everywhere
    singular_value: float
    left: tuple[int, ...]  # tokens with the largest dot product with the left vector (U·S)
    right: tuple[int, ...]  # … with the right vector


@dataclass(frozen=True)
class BiasWords:
    """The words a bias direction favours (+) and disfavours (−)."""

    layer: int
    head: int
    positive: tuple[int, ...]
    negative: tuple[int, ...]


def factored_svd(A: Tensor, B: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """SVD of A Bᵀ for thin A, B [d, r]: (U [d, r], S [r], V [d, r]) with A Bᵀ = U diag(S) Vᵀ, in float64."""
    Qa, Ra = torch.linalg.qr(A.double())  # A = Qa Ra, Qa [d, r] orthonormal columns, Ra [r, r]
    Qb, Rb = torch.linalg.qr(B.double())
    u, S, vh = torch.linalg.svd(Ra @ Rb.T)  # A Bᵀ = Qa (Ra Rbᵀ) Qbᵀ = (Qa u) diag(S) (Qb vhᵀ)ᵀ
    return Qa @ u, S, Qb @ vh.T


def circuit_factors(w: HeadWeights, circuit: str) -> tuple[Tensor, Tensor]:
    """(A, B) in float64 with A Bᵀ = W_QK (A = W_Q/√d_h, B = W_K) or W_VO (A = W_V, B = W_Oᵀ)."""
    if circuit == "QK":
        return w.W_Q.double() / w.head_dim ** 0.5, w.W_K.double()
    if circuit == "VO":
        return w.W_V.double(), w.W_O.T.double()
    raise ValueError(f"circuit must be one of {', '.join(CIRCUITS)}, got {circuit!r}")


def sign_rule(U: Tensor, V: Tensor, right_embeddings: Tensor) -> tuple[Tensor, Tensor]:
    """Flip each pair (u_r, v_r) so that v_r's largest-magnitude match against the rows of R is positive."""
    matches = right_embeddings @ V.to(right_embeddings.dtype)  # [vocab, r], in the embeddings' precision
    flip = matches.amax(dim=0) < -matches.amin(dim=0)  # [r]: the most negative match is the larger one
    sign = 1.0 - 2.0 * flip.to(V.dtype)
    return U * sign, V * sign


def side_embeddings(model: GPT2, layer: int, circuit: str, E_tilde: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """What the left and right vectors are matched against: (Ẽ, Ẽ) for QK, (Ẽ, E) for VO."""
    E_tilde = ln_1_embeddings(model, layer) if E_tilde is None else E_tilde
    return E_tilde, (E_tilde if circuit == "QK" else model.unembedding_rows().detach())


@torch.inference_mode()
def head_svd(model: GPT2, layer: int, head: int, circuit: str, E_tilde: Tensor | None = None) -> HeadSVD:
    """The signed SVD of head `head`'s W_QK or W_VO in block `layer` (pass Ẽ to reuse it across heads)."""
    w = head_weights(model, layer, head)
    U, S, V = factored_svd(*circuit_factors(w, circuit))
    _, right_embeddings = side_embeddings(model, layer, circuit, E_tilde)
    U, V = sign_rule(U, V, right_embeddings)
    return HeadSVD(layer, head, circuit, S, U * S, V)


def nearest_words(vectors: Tensor, embeddings: Tensor, k: int, allowed: Tensor | None = None) -> Tensor:
    """For each column of vectors [d, n], the k rows of embeddings [V, d] with the largest dot product: [n, k].

    Only the `allowed` rows [V] compete (all by default); k is clipped to their number."""
    n_words = embeddings.shape[0] if allowed is None else int(allowed.sum())
    scores = restrict(embeddings @ vectors.to(embeddings.dtype), allowed, dim=0)
    return scores.topk(min(k, n_words), dim=0).indices.T


@torch.inference_mode()
def singular_pair_words(model: GPT2, svd: HeadSVD, n_pairs: int = 20, k: int = 3,
                        E_tilde: Tensor | None = None, allowed: Tensor | None = None) -> list[SingularPairWords]:
    """The paper's table for one head: the top n_pairs singular pairs (≤ d_h) and the k nearest words of each side."""
    n = min(n_pairs, svd.singular_values.numel())
    left_embeddings, right_embeddings = side_embeddings(model, svd.layer, svd.circuit, E_tilde)
    left = nearest_words(svd.left[:, :n], left_embeddings, k, allowed).tolist()
    right = nearest_words(svd.right[:, :n], right_embeddings, k, allowed).tolist()
    return [SingularPairWords(r + 1, svd.singular_values[r].item(), tuple(left[r]), tuple(right[r]))
            for r in range(n)]


def cumulative_share(singular_values: Tensor) -> Tensor:
    """Σ_{i≤r} S_i / Σ S: the share of the total singular value carried by the first r+1 pairs, [r]."""
    return singular_values.cumsum(0) / singular_values.sum()


@torch.inference_mode()
def key_bias_words(model: GPT2, layer: int, head: int, k: int = 5, E_tilde: Tensor | None = None,
                   allowed: Tensor | None = None) -> BiasWords:
    """The k words of Ẽ most aligned with the key-bias direction b_Q W_Kᵀ/√d_h, and the k most opposed (k ≤ V)."""
    E_tilde = ln_1_embeddings(model, layer) if E_tilde is None else E_tilde
    preference = E_tilde @ key_bias_direction(head_weights(model, layer, head))  # [V]
    k = min(k, preference.numel() if allowed is None else int(allowed.sum()))
    return BiasWords(layer, head, tuple(restrict(preference, allowed).topk(k).indices.tolist()),
                     tuple(restrict(preference, allowed, largest=False).topk(k, largest=False).indices.tolist()))


def plot_singular_values(spectra: Mapping[int, Tensor], path: str | Path, title: str = "", dpi: int = 120,
                         circuit: str = "QK") -> Path:
    """Write plots.singular_values_figure of head -> singular values to `path` (atomically; the suffix's format)."""
    return plots.save_figure(plots.singular_values_figure(spectra, title, circuit=circuit), path, dpi=dpi)


# ---- the tables of a whole analysis, as the command line writes them ---------------------------------------

@dataclass(frozen=True)
class SVDTables:
    """Everything `minigpt-geom svd` shows for some layers and heads."""

    singular: dict[tuple[int, str], list[Table]]  # (layer, circuit) -> one table per head
    shares: dict[tuple[int, str], dict[int, Tensor]]  # (layer, circuit) -> head -> cumulative share [r]
    spectra: dict[tuple[int, str], dict[int, Tensor]]  # (layer, circuit) -> head -> singular values [r]
    key_bias: dict[int, Table]  # layer -> the key-bias words of every head
    long: Table  # every word of every table, one line each (svd.csv)


def svd_tables(model: GPT2, tokenizer: Tokenizer, layers: Sequence[int], heads: Sequence[int],
               circuits: Sequence[str] = CIRCUITS, n_pairs: int = 20, k: int = 3, bias_words: int = 5,
               progress: tqdm | None = None, allowed: Tensor | None = None) -> SVDTables:
    """The paper's tables for every (layer, circuit, head), the key-bias tables and the long CSV table.

    `progress` advances by one per head and layer (each head's circuits and key-bias words)."""
    for layer in layers:
        check_layer(model, layer)
    for head in heads:
        check_head(model, head)
    words = lambda tokens: ", ".join(token_label(tokenizer, t) for t in tokens)  # noqa: E731
    singular, shares, spectra, key_bias, long = {}, {}, {}, {}, []
    for layer in layers:
        E_tilde = ln_1_embeddings(model, layer)  # shared by every head of the layer
        bias_rows = []
        for head in heads:
            for circuit in circuits:
                svd = head_svd(model, layer, head, circuit, E_tilde)
                shares.setdefault((layer, circuit), {})[head] = cumulative_share(svd.singular_values)
                spectra.setdefault((layer, circuit), {})[head] = svd.singular_values
                pairs = singular_pair_words(model, svd, n_pairs, k, E_tilde, allowed)
                singular.setdefault((layer, circuit), []).append(Table(
                    ["Rank", "σ", "left words", "right words"],
                    [[p.rank, p.singular_value, words(p.left), words(p.right)] for p in pairs],
                    f"W_{circuit} singular vectors, layer {layer}, head {head}"))
                long += [[circuit, layer, head, p.rank, p.singular_value, side, i, t, tokenizer.decode([t])]
                         for p in pairs for side, tokens in (("left", p.left), ("right", p.right))
                         for i, t in enumerate(tokens, start=1)]
            bias = key_bias_words(model, layer, head, bias_words, E_tilde, allowed)
            bias_rows.append([head, words(bias.positive), words(bias.negative)])
            if progress is not None:
                progress.update()
        key_bias[layer] = Table(["head", "+ keys", "− keys"], bias_rows,
                                f"key-bias direction b_Q W_Kᵀ/√d_head against ln_1(E), layer {layer}")
    header = ["circuit", "layer", "head", "rank", "singular_value", "side", "word_rank", "token", "text"]
    return SVDTables(singular, shares, spectra, key_bias, Table(header, long))
