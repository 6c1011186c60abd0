"""What each layer-norm variant does to the model's predictions, against the model's own variants.

The reference is the model as it is (its own variant at every site, e.g. layer norm for GPT-2, none for an
LN-free model): its row reads KL 0, agreement 1 and its own perplexity. Every other row swaps one variant in
at every site of a copy that shares the weights; `model` itself is never changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import InputError
from ..model.gpt2 import GPT2
from ..model.variants import NORM_VARIANTS, get_norm
from .tables import Table

if TYPE_CHECKING:
    from tqdm import tqdm

OWN = "own"  # the name of the reference row: the model's own variants


@dataclass(frozen=True)
class NormComparison:
    """One variant's next-token predictions on a text, compared with the model's own; `problem` says why a
    variant gave no numbers (then they are None)."""

    variant: str
    kl_from_own: float | None  # mean over positions of KL(p_own ‖ p_variant), nats
    top1_agreement: float | None  # share of positions whose most likely next token is the model's own
    perplexity: float | None  # exp(mean −log p(next token)) on the text itself
    problem: str = ""


def own_variants(model: GPT2) -> str:
    """The model's variants in words: one name, or each name with its sites counted ("layernorm ×24, none ×1")."""
    names = [site.variant.name for site in model.norm_sites().values()]
    counts = {name: names.count(name) for name in dict.fromkeys(names)}
    return next(iter(counts)) if len(counts) == 1 else ", ".join(f"{n} ×{c}" for n, c in counts.items())


def uncalibrated(model: GPT2, name: str) -> bool:
    """True when `name` learns nothing and the model has no calibrated value for it (fixed σ never measured)."""
    variant = get_norm(name)
    return bool(variant.parameters) and not variant.learned and not any(
        site.variant.name == name for site in model.norm_sites().values())


@torch.inference_mode()
def compare_norms(model: GPT2, idx: torch.Tensor, variants: list[str] | None = None, progress: tqdm | None = None
                  ) -> list[NormComparison]:
    """Run idx [1, T] (T ≥ 2) as the model is, then under every variant on a copy sharing the weights.

    `progress` advances by one per row."""
    if idx.shape[-1] < 2:
        raise InputError("comparing norms needs a text of at least two tokens (perplexity scores next tokens)")
    names = [get_norm(name).name for name in variants or list(NORM_VARIANTS)]  # unknown names refused first
    idx = idx.to(model.wte.weight.device)
    reference = torch.log_softmax(model(idx).double(), dim=-1)
    results = [score(f"{OWN} ({own_variants(model)})", reference, reference, idx)]
    if progress is not None:
        progress.update()
    for name in names:
        if uncalibrated(model, name):
            results.append(NormComparison(name, None, None, None, "needs a calibrated constant "
                                          "(lnfree.calibrate_sigma), which these weights do not hold"))
        else:
            results.append(score(name, reference, torch.log_softmax(model.with_norm(name)(idx).double(), dim=-1), idx))
        if progress is not None:
            progress.update()
    return results


def score(name: str, reference: torch.Tensor, log_p: torch.Tensor, idx: torch.Tensor) -> NormComparison:
    """KL from the reference, top-1 agreement and perplexity of log-probabilities log_p [1, T, V]."""
    if not torch.isfinite(log_p).all():
        return NormComparison(name, None, None, None, "its logits are not finite on these weights")
    kl = (reference.exp() * (reference - log_p)).sum(-1).mean().item()
    agreement = (log_p.argmax(-1) == reference.argmax(-1)).double().mean().item()
    nll = -log_p[:, :-1].gather(-1, idx[:, 1:, None]).mean().item()
    return NormComparison(name, kl, agreement, math.exp(nll) if nll < 700 else math.inf)


def rounded(value: float | None, digits: int = 4) -> str:
    """A number to `digits` significant digits ("1.2e+182" for a huge perplexity); "—" for none."""
    return "—" if value is None else "> 1e300" if math.isinf(value) else f"{value:.{digits}g}"


def norms_table(rows: list[NormComparison], n_tokens: int) -> Table:
    """One row per variant, the model's own first."""
    return Table(["variant", "KL(own ‖ variant) nats", "top-1 agreement", "perplexity", "note"],
                 [[r.variant, rounded(r.kl_from_own), rounded(r.top1_agreement, 3), rounded(r.perplexity),
                   r.problem] for r in rows],
                 f"{n_tokens} tokens; KL and agreement per position, averaged; 'own' is the model as loaded")
