"""Experiment 1: the word embeddings E against layer norm, and which words the output sphere reaches.

(a) How far is E from its own sphere projection? For E as it is, centred by the vocabulary mean, scaled so
    that the mean norm is √d, and both, the L2 and cosine distances of each row to layer_norm(E) (no γ, β).
(b) The logit of word e is LN_f(x)·e = x̂·(γ⊙e) + β·e with x̂ on the √d-sphere, so by Cauchy-Schwarz
        LN_f(x)·e ≤ √d‖γ⊙e‖ + β·e,
    the reachability bound: words with a large bound are easy to predict, words with a small one hard.
    The paper ranks words by ‖e‖, ‖γ⊙e‖, ‖e‖ + β·e and ‖γ⊙e‖ + β·e (its code left out the √d); the exact
    bound is offered beside them. x̂ also lies in the hyperplane H = {v : Σv = 0}, so x̂·(γ⊙e) = x̂·c with
    c = centre(γ⊙e), the projection of γ⊙e onto H, and
        LN_f(x)·e ≤ √d‖c‖ + β·e ≤ √d‖γ⊙e‖ + β·e,
    the tight bound: x = s·c with s large gives x̂ → √d c/‖c‖ (ε fades), which reaches it.

Both read the model's own sites. (a) projects E with block 0's ln_1 projection (the first site that reads
the words), and "scaled" means scaled to the radius of its set: √d on the spheres, and on a set without one
(DyT's box) the mean norm of the projected rows; (b) takes ln_f's γ, β (1 and 0 for a variant without them)
and the rows of the model's own unembedding (E, or after a fold W with its bias b added to β·e), and the
tight bound is the supremum of p·(γ⊙e) over the variant's own output set, its support function h
(geometry.Geometry.support): √d‖centre(a)‖ on layer norm's sphere, √d‖a‖ on RMSNorm's, ‖a‖₁ on DyT's box.
A variant whose outputs fill an unbounded set (fixed σ, none: an LN-free model) has no set to measure E
against and reaches every word: (a) and the two bounds do not apply there, and the rankings by ‖e‖, ‖γ⊙e‖
and their β·e terms, which still do, are all that (b) holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.gpt2 import GPT2
from ..config import site_name
from ..errors import InputError
from ..model.norm_site import SphereNorm
from .tables import Table, significant, token_label
from .vocabulary import restrict

if TYPE_CHECKING:
    from ..text.tokenizer import Tokenizer

# Column name -> how it is computed, for tables (e = a row of E, γ and β of ln_f). The last two are bounds
# over ln_f's output set: they need a bounded one (BOUNDS).
MEASURES = {
    "norm": "‖e‖",
    "scaled_norm": "‖γ⊙e‖",
    "norm_plus_bias": "‖e‖ + β·e",
    "scaled_norm_plus_bias": "‖γ⊙e‖ + β·e",
    "reach_bound": "√d‖γ⊙e‖ + β·e",
    "tight_reach_bound": "h(γ⊙e) + β·e",  # h: the support function of ln_f's output set (√d‖centre(a)‖ for LN)
}
BOUNDS = ("reach_bound", "tight_reach_bound")


@dataclass(frozen=True)
class SphereDistance:
    """Distance of one version of E to its projection N(E) by block 0's ln_1, mean and std over the vocabulary."""

    setting: str  # "as is", "centred", "scaled", "centred & scaled"
    l2_mean: float  # mean of ‖v_i − N(e_i)‖
    l2_std: float  # its standard deviation (ddof = 1, as torch.std)
    cosine_mean: float  # mean of 1 − cos(v_i, N(e_i))
    cosine_std: float
    target: str = "layernorm(E)"  # N(E), named by the variant: "rmsnorm(E)", "dyt(E)"
    radius: str = "√d"  # what "scaled" scales the mean norm to


@dataclass(frozen=True)
class RankedWord:
    """One word at the top or bottom of the vocabulary by one measure."""

    measure: str  # a key of MEASURES
    position: str  # "top 1" … "top k", "bottom k" … "bottom 1" (bottom 1 = the smallest)
    token: int
    value: float


def embedding_variants(E: Tensor, radius: float | None = None) -> dict[str, Tensor]:
    """E [V, d] as is, centred, scaled to mean norm `radius` (default √d), and centred & scaled (same factor)."""
    scale = (math.sqrt(E.shape[1]) if radius is None else radius) / E.norm(dim=1).mean()  # √d / mean‖e‖
    centred = E - E.mean(dim=0, keepdim=True)  # minus the vocabulary's mean vector
    # As in the paper's code, "centred & scaled" reuses the scale factor of the uncentred E.
    return {"as is": E, "centred": centred, "scaled": E * scale, "centred & scaled": centred * scale}


def bounded_site(site: SphereNorm, name: str, what: str) -> SphereNorm:
    """`site`, unless its variant's outputs fill an unbounded set: then InputError saying why `what` does not apply."""
    geometry = site.variant.geometry
    if geometry.support is None:
        raise InputError(f"{what} needs a bounded output set, but {name} is {site.variant.name!r} "
                         f"({geometry.output_set}): it does not apply to this model")
    return site


def distance_note(model: GPT2) -> str | None:
    """Why table (a) does not apply to this model (block 0's ln_1 fills an unbounded set), or None."""
    variant = model.h[0].ln_1.variant
    if variant.geometry.support is not None:
        return None
    return (f"(a) does not apply: {site_name(0, 'ln_1')} is {variant.name!r} ({variant.geometry.output_set}), "
            f"no bounded set to measure E's distance to")


@torch.inference_mode()
def sphere_distances(model: GPT2) -> list[SphereDistance]:
    """Table (a): distances of E and its centred/scaled versions to their projection by h.0.ln_1 (no γ, β)."""
    E = model.wte.weight
    site = bounded_site(model.h[0].ln_1, site_name(0, "ln_1"), "the distance of E to its projection")
    target = site.project(E)  # [V, d], rows on the variant's set (the √d-sphere in H for layer norm)
    name, geometry = site.variant.name, site.variant.geometry
    if geometry.scale_free:  # a sphere: its radius √d
        radius, radius_text = None, "√d"
    else:  # a set without one radius (DyT's box): the projected rows' own mean norm
        radius = target.norm(dim=1).mean().item()
        radius_text = f"{radius:.4g}, the mean ‖{name}(e)‖"
    rows = []
    for setting, version in embedding_variants(E, radius).items():
        l2 = (version - target).norm(dim=1)  # [V]
        cosine = 1 - F.cosine_similarity(version, target, dim=1)  # [V]
        rows.append(SphereDistance(setting, l2.mean().item(), l2.std().item(),
                                   cosine.mean().item(), cosine.std().item(), f"{name}(E)", radius_text))
    return rows


@torch.inference_mode()
def reachability(model: GPT2) -> dict[str, Tensor]:
    """The measures of MEASURES for every word, with ln_f's γ and β and the model's unembedding: name -> [V].
    The bounds (BOUNDS) only where ln_f's output set is bounded: an unbounded one reaches every word."""
    site = model.ln_f
    gamma, beta = site.affine_map()
    E = model.unembedding_rows()  # the rows e the output head matches against
    norm = E.norm(dim=1)  # ‖e‖
    scaled_norm = (E * gamma).norm(dim=1)  # ‖γ⊙e‖
    bias = E @ beta + (0 if model.lm_head.tied else model.lm_head.bias)  # β·e (+ b_e, folded)
    measures = {
        "norm": norm,
        "scaled_norm": scaled_norm,
        "norm_plus_bias": norm + bias,
        "scaled_norm_plus_bias": scaled_norm + bias,
    }
    support = site.variant.geometry.support
    if support is not None:
        measures["reach_bound"] = math.sqrt(E.shape[1]) * scaled_norm + bias
        measures["tight_reach_bound"] = support(E * gamma) + bias  # sup over the output set
    return measures


def top_and_bottom(measures: dict[str, Tensor], k: int = 5, allowed: Tensor | None = None) -> list[RankedWord]:
    """Table (b): for each measure the k largest words, then the k smallest (largest of them first), among the
    `allowed` words [V] (all by default)."""
    rows = []
    for name, values in measures.items():
        k_ = min(k, values.numel() if allowed is None else int(allowed.sum()))
        top = restrict(values, allowed).topk(k_).indices.tolist()
        bottom = restrict(values, allowed, largest=False).topk(k_, largest=False).indices.tolist()  # smallest first
        rows += [RankedWord(name, f"top {i + 1}", t, values[t].item()) for i, t in enumerate(top)]
        rows += [RankedWord(name, f"bottom {i + 1}", t, values[t].item()) for i, t in reversed(list(enumerate(bottom)))]
    return rows


# ---- tables ---------------------------------------------------------------------------------------------

def distance_table(rows: Sequence[SphereDistance]) -> Table:
    """Table (a): one row per version of E, the caption naming the projection N(E) and the scale."""
    target, radius = (rows[0].target, rows[0].radius) if rows else ("N(E)", "√d")
    return Table(["setting", "L2 mean", "L2 std", "cosine distance mean", "cosine distance std"],
                 [[r.setting, r.l2_mean, r.l2_std, r.cosine_mean, r.cosine_std] for r in rows],
                 f"(a) distance to {target}, block 0's ln_1 without γ, β, over the vocabulary; scaled: to mean "
                 f"norm {radius}")


def reach_caption(model: GPT2) -> str:
    """What h is for this model's ln_f: the supremum of p·a over its variant's output set (or why none is)."""
    variant = model.ln_f.variant
    if variant.geometry.support is None:
        return (f"(b) words ranked with ln_f's γ, β; ln_f is {variant.name} ({variant.geometry.output_set}): its "
                f"output reaches every word, so the reach bounds do not apply")
    return (f"(b) words ranked with ln_f's γ, β; ln_f is {variant.name}, h(a) = sup p·a over "
            f"{variant.geometry.output_set}")


def reach_table(ranked: Sequence[RankedWord], tokenizer: Tokenizer, caption: str = "(b) words ranked") -> Table:
    """Table (b), wide: one column per measure ranked, one row per rank, cells "'word' value"."""
    positions = list(dict.fromkeys(r.position for r in ranked))
    measures = [m for m in MEASURES if any(r.measure == m for r in ranked)]
    cells = {(r.measure, r.position): f"{token_label(tokenizer, r.token)} {significant(r.value)}" for r in ranked}
    return Table(["", *(MEASURES[m] for m in measures)], [[p, *(cells[m, p] for m in measures)] for p in positions],
                 caption)


def reach_csv_table(ranked: Sequence[RankedWord], tokenizer: Tokenizer) -> Table:
    """Table (b), long: one line per (measure, rank), for embeddings_reach.csv."""
    return Table(["measure", "formula", "position", "token", "text", "value"],
                 [[r.measure, MEASURES[r.measure], r.position, r.token, tokenizer.decode([r.token]), r.value]
                  for r in ranked])
