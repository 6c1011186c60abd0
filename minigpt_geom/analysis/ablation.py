"""Head ablation: knock each head out in turn and measure what the model loses.

A head's output z_l^h (before W_O, every position) is replaced by

    zero       0: the head writes nothing but W_O's share of the bias
    mean       its mean over every position of a reference batch: the head's typical output, no information
    resample   its output on another text of the reference batch, at the same positions

and the change in the metric is reported per head: the next-token loss over the text (mean cross-entropy), or
the metric of an answer against a wrong word (metric.py). Each ablated run is one row of a batch, L·H rows in
a few forward passes (batching.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..errors import InputError
from .metric import METRIC_WORDS, Contrast
from .tables import Table

METHODS = ("zero", "mean", "resample")
LOSS = "loss"


@dataclass(frozen=True)
class AblationResult:
    """The metric with each head ablated, and without."""

    method: str  # METHODS
    metric: str  # "loss" or a Contrast's metric
    values: Tensor  # [L, H] float32: the metric with head (l, h) ablated
    baseline: float  # the metric of the run as it is
    words: tuple[str, ...]
    contrast: Contrast | None = None  # None for the loss
    passes: int = 0  # forward passes the sweep ran, the unablated and reference runs included

    @property
    def change(self) -> Tensor:
        """values − baseline per head: the loss rises (> 0) or the answer's lead falls (< 0) when a head matters."""
        return self.values - self.baseline

    @property
    def metric_words(self) -> str:
        """The metric in words."""
        return "next-token loss (nats)" if self.metric == LOSS else METRIC_WORDS[self.metric]


def check_method(method: str) -> None:
    """InputError unless `method` is an ablation this module knows."""
    if method not in METHODS:
        raise InputError(f"ablation must be one of {', '.join(METHODS)}, got {method!r}", "method")


def ablation_rows(result: AblationResult) -> list[dict]:
    """One record per head: layer, head, the metric ablated and its change (full precision)."""
    change = result.change
    return [{"layer": layer, "head": head, "metric": float(result.values[layer, head]),
             "change": float(change[layer, head])}
            for layer in range(result.values.shape[0]) for head in range(result.values.shape[1])]


def ablation_matrix(result: AblationResult) -> Table:
    """The change per head as a matrix: one row per layer, one column per head."""
    change = result.change
    header = ["layer", *(f"head {h}" for h in range(change.shape[1]))]
    rows = [[layer, *(float(v) for v in change[layer])] for layer in range(change.shape[0])]
    caption = (f"{result.method}-ablation of each head: change in the {result.metric_words} "
               f"(unablated {result.baseline:.4g})")
    return Table(header, rows, caption)
