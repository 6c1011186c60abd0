"""What each layer-norm variant does to the model's predictions, against GPT-2's own layer norm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import InputError
from ..model import GPT2
from ..sphere import NORM_VARIANTS
from .circuits import check_unfolded
from .tables import Table

if TYPE_CHECKING:
    from tqdm import tqdm


@dataclass(frozen=True)
class NormComparison:
    """One variant's next-token predictions on a text, compared with the default (layernorm) ones."""

    variant: str
    kl_from_default: float  # mean over positions of KL(p_default ‖ p_variant), nats
    top1_agreement: float  # share of positions whose most likely next token is the default's
    perplexity: float  # exp(mean −log p(next token)) on the text itself


@torch.inference_mode()
def compare_norms(model: GPT2, idx: torch.Tensor, variants: list[str] | None = None, progress: tqdm | None = None
                  ) -> list[NormComparison]:
    """Run idx [1, T] (T ≥ 2) under every variant, each on a copy that shares the weights: `model` is untouched.

    `progress` advances by one per variant."""
    if idx.shape[-1] < 2:
        raise InputError("comparing norms needs a text of at least two tokens (perplexity scores next tokens)")
    check_unfolded(model)  # with fold_ln, γ and β no longer sit at the norm sites
    idx = idx.to(model.wte.weight.device)
    reference = torch.log_softmax(model.with_norm("layernorm")(idx).double(), dim=-1)
    results = []
    for name in variants or list(NORM_VARIANTS):
        log_p = torch.log_softmax(model.with_norm(name)(idx).double(), dim=-1)
        kl = (reference.exp() * (reference - log_p)).sum(-1).mean()
        agreement = (log_p.argmax(-1) == reference.argmax(-1)).double().mean()
        nll = -log_p[:, :-1].gather(-1, idx[:, 1:, None]).mean()
        results.append(NormComparison(name, kl.item(), agreement.item(), nll.exp().item()))
        if progress is not None:
            progress.update()
    return results


def norms_table(rows: list[NormComparison], n_tokens: int) -> Table:
    """One row per variant."""
    return Table(["variant", "KL(default ‖ variant) nats", "top-1 agreement", "perplexity"],
                 [[r.variant, r.kl_from_default, r.top1_agreement, r.perplexity] for r in rows],
                 f"{n_tokens} tokens; KL and agreement per position, averaged")
