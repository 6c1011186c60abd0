"""Experiment 3: singular vectors of a head's circuits, read as words (Traveling Words; Millidge & Black 2022).

    W_QK = W_Q W_Kᵀ/√d_h = U diag(S) Vᵀ     query side U·S, key side V, both matched against Ẽ = ln_1(E)
    W_VO = W_V W_O       = U diag(S) Vᵀ     input side U·S against Ẽ, output side V against E (the unembedding)

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
from typing import Mapping

import torch
from torch import Tensor

from ..model import GPT2
from .circuits import HeadWeights, head_weights, key_bias_direction, ln_1_embeddings

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

    rank: int  # 0 = the largest singular value
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


def side_embeddings(model: GPT2, layer: int, circuit: str, sphere: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """What the left and right vectors are matched against: (Ẽ, Ẽ) for QK, (Ẽ, E) for VO."""
    sphere = ln_1_embeddings(model, layer) if sphere is None else sphere
    return sphere, (sphere if circuit == "QK" else model.wte.weight.detach())


@torch.inference_mode()
def head_svd(model: GPT2, layer: int, head: int, circuit: str, sphere: Tensor | None = None) -> HeadSVD:
    """The signed SVD of head `head`'s W_QK or W_VO in block `layer` (pass Ẽ to reuse it across heads)."""
    w = head_weights(model, layer, head)
    U, S, V = factored_svd(*circuit_factors(w, circuit))
    _, right_embeddings = side_embeddings(model, layer, circuit, sphere)
    U, V = sign_rule(U, V, right_embeddings)
    return HeadSVD(layer, head, circuit, S, U * S, V)


def nearest_words(vectors: Tensor, embeddings: Tensor, k: int) -> Tensor:
    """For each column of vectors [d, n], the k rows of embeddings [V, d] with the largest dot product: [n, k].

    k is clipped to the vocabulary V."""
    return (embeddings @ vectors.to(embeddings.dtype)).topk(min(k, embeddings.shape[0]), dim=0).indices.T


@torch.inference_mode()
def singular_pair_words(model: GPT2, svd: HeadSVD, n_pairs: int = 20, k: int = 3,
                        sphere: Tensor | None = None) -> list[SingularPairWords]:
    """The paper's table for one head: the top n_pairs singular pairs (≤ d_h) and the k nearest words of each side."""
    n = min(n_pairs, svd.singular_values.numel())
    left_embeddings, right_embeddings = side_embeddings(model, svd.layer, svd.circuit, sphere)
    left = nearest_words(svd.left[:, :n], left_embeddings, k).tolist()
    right = nearest_words(svd.right[:, :n], right_embeddings, k).tolist()
    return [SingularPairWords(r, svd.singular_values[r].item(), tuple(left[r]), tuple(right[r])) for r in range(n)]


def cumulative_share(singular_values: Tensor) -> Tensor:
    """Σ_{i≤r} S_i / Σ S: the share of the total singular value carried by the first r+1 pairs, [r]."""
    return singular_values.cumsum(0) / singular_values.sum()


@torch.inference_mode()
def key_bias_words(model: GPT2, layer: int, head: int, k: int = 5, sphere: Tensor | None = None) -> BiasWords:
    """The k words of Ẽ most aligned with the key-bias direction b_Q W_Kᵀ/√d_h, and the k most opposed (k ≤ V)."""
    sphere = ln_1_embeddings(model, layer) if sphere is None else sphere
    preference = sphere @ key_bias_direction(head_weights(model, layer, head))  # [V]
    k = min(k, preference.numel())
    return BiasWords(layer, head, tuple(preference.topk(k).indices.tolist()),
                     tuple(preference.topk(k, largest=False).indices.tolist()))


def plot_singular_values(shares: Mapping[int, Tensor], path: str | Path, title: str = "") -> Path:
    """Cumulative share of singular values (head -> share [r]), one line per head, saved as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, leaves the user's backend alone

    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for head, share in shares.items():
        share = share.detach().float().cpu().numpy()
        ax.plot(range(1, len(share) + 1), 100 * share, label=f"head {head}", linewidth=1.2)
    ax.set_xlabel("number of singular values r")
    ax.set_ylabel("cumulative share of Σ S (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
