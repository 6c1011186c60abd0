"""Telling a run that collapsed from one that is only short: what is measured at each evaluation, and when to warn.

Two collapses have a cause that can be seen (issue 28, item 5):
  - DyT's tanh saturates: once ‖x‖ grows, |tanh(αx_i)| → 1 at nearly every coordinate, the site reads little
    more than the signs of x, and tanh′ = 1 − tanh² passes almost no gradient back. At ln_f that ends the run:
    every gradient reaches the layers through ln_f. It starts there, too (docs/norms.md: the logits' scale),
    while the first layers' sites stay unsaturated. Measured on the residual states of one evaluation
    micro-batch (the trace's captured points, model/trace.py), with ‖x_L‖ beside it.
  - The validation loss stops improving near the held-out unigram entropy: the model predicts word frequencies
    and nothing more. A short run on a large vocabulary is also above that level, but still falling; so the
    note asks for the last PLATEAU evaluations near the entropy and no longer decreasing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from torch import Tensor

from ..errors import Note
from ..model.gpt2 import GPT2
from ..model.trace import Trace, TraceRequest

SATURATED = 0.99  # |tanh(αx_i)| above this: tanh′ < 0.02, under 2 % of a gradient passes back through x_i
ALL_SATURATED = 0.95  # a DyT site with more than this share of its coordinates saturated reads ~only signs
NEAR_UNIGRAM = 0.9  # a validation loss above this share of the held-out unigram entropy: ~no context learned
PLATEAU = 3  # evaluations the loss must stay near that entropy, without improving, to be called a collapse
STALLED = 0.01  # "without improving": the loss fell by less than this share over those evaluations


class CollapseWarning(Note):
    """The run collapsed: DyT saturated at ln_f (or at every site), or the loss stuck near the unigram entropy."""


@dataclass(frozen=True)
class Health:
    """What one evaluation micro-batch's pass says about the residual stream and the DyT sites."""

    residual_norm: float  # mean ‖x_L‖ over its positions: the residual stream ln_f reads
    saturation: dict[str, float]  # DyT site -> share of its coordinates with |tanh(αx_i)| > SATURATED

    @property
    def most_saturated(self) -> float | None:
        """The saturation of the DyT site that saturates most; None without a DyT site."""
        return max(self.saturation.values()) if self.saturation else None


def dyt_sites(model: GPT2) -> list[str]:
    """The names of the model's DyT sites, in forward order."""
    return [name for name, site in model.norm_sites().items() if site.variant.name == "dyt"]


def health_request(model: GPT2) -> TraceRequest:
    """A trace that keeps the points (tanh(αx), before γ, β) of each kind of site where DyT is used."""
    return TraceRequest(capture=tuple(dict.fromkeys(name.rsplit(".", 1)[-1] for name in dyt_sites(model))))


def saturated_share(points: Tensor) -> float:
    """The share of coordinates of points [..., d] with |p_i| > SATURATED."""
    return (points.float().abs() > SATURATED).float().mean().item()


def health(model: GPT2, trace: Trace) -> Health:
    """The Health a pass traced with health_request(model) shows."""
    saturation = {}
    for name in dyt_sites(model):
        kind = name.rsplit(".", 1)[-1]
        points = trace.captured[kind]  # [L, B, T, d], ln_f's [B, T, d]
        saturation[name] = saturated_share(points if kind == "ln_f" else points[int(name.split(".")[1])])
    return Health(trace.ln_f.input_norm.float().mean().item(), saturation)


def saturation_note(step: int, measured: Health) -> str | None:
    """One line when ln_f's DyT, or every DyT site, has more than ALL_SATURATED of its coordinates saturated."""
    shares = measured.saturation
    if not shares or (shares.get("ln_f", 0.0) <= ALL_SATURATED and min(shares.values()) <= ALL_SATURATED):
        return None
    where = "ln_f (every gradient passes through it)" if shares.get("ln_f", 0.0) > ALL_SATURATED else "every site"
    sites = ", ".join(f"{name} {share:.1%}" for name, share in shares.items())
    return (f"step {step}: DyT's tanh is saturated at {where} (share of |tanh(αx)| > {SATURATED}: {sites}; "
            f"‖x_L‖ = {measured.residual_norm:.4g}): the sites read little more than signs and pass back almost no "
            f"gradient; start ln_f's γ larger (--dyt-gamma, e.g. 32), α lower (--dyt-alpha) or train with a lower "
            f"--lr")


def unigram_entropy(ids: np.ndarray) -> float:
    """H = −Σ_v p_v ln p_v (nats) of the ids' own frequencies p_v: the loss of predicting every next token from
    its frequency alone, the level a run that learned no context stays near."""
    counts = np.bincount(np.asarray(ids, dtype=np.int64))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def plateau_note(val_losses: Sequence[float], entropy: float, dyt: bool) -> str | None:
    """One line when each of the last PLATEAU validation losses is above NEAR_UNIGRAM × the held-out unigram
    entropy and the loss fell by less than STALLED of itself over them; else None (a run still falling is short,
    not collapsed)."""
    last = list(val_losses[-PLATEAU:])
    if len(last) < PLATEAU or min(last) <= NEAR_UNIGRAM * entropy or last[0] - last[-1] > STALLED * last[-1]:
        return None
    shown = ", ".join(f"{loss:.4g}" for loss in last)
    return (f"the validation loss stopped improving near the held-out unigram entropy ({entropy:.4g} nats): "
            f"{shown} at the last {PLATEAU} evaluations: the model predicts little more than word frequencies, a "
            f"collapse; try a lower --lr" + (", a larger --dyt-gamma" if dyt else "") + " or more warm-up")
