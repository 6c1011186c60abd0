"""Activation patching: which activation, moved from a clean run into a corrupted one, restores the answer?

Two prompts of the same length differ in a detail ("… the Eiffel Tower is in" / "… the Colosseum is in").
Run the clean one and keep the activation at a site; run the corrupted one with that activation set back to
its clean value at one place (a layer and a position, or a layer and a head), and measure the metric m
(metric.py). Over every place this gives a map of where the information that decides the answer sits:

    resid_pre   x_l[t], the residual stream entering block l at position t          -> [L, T]
    head_out    head h's output of block l (before W_O), at every position at once  -> [L, H]

Every patched run is one row of a batch: the corrupted prompt repeated, each row edited at its own place
(edits that name (row, position) pairs with one value each), as many rows per forward pass as the memory
budget allows (batching.py), never one forward pass per patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InputError
from .metric import METRIC_WORDS, Contrast, normalised
from .tables import Table

SITES = {"resid_pre": ("layer", "position"), "head_out": ("layer", "head")}
SITE_WORDS = {"resid_pre": "the residual stream x_l entering block l, one position at a time",
              "head_out": "each head's output (before W_O), at every position at once"}


@dataclass(frozen=True)
class PatchingResult:
    """A sweep's metric for every patched run, with the clean and corrupted runs' own values."""

    site: str  # "resid_pre" or "head_out" (SITES)
    contrast: Contrast
    values: Tensor  # [L, T] or [L, H] float32: m of the corrupted run with that one place patched
    clean: float  # m of the clean run
    corrupted: float  # m of the corrupted run
    clean_words: tuple[str, ...]  # the prompts' tokens, for labels
    corrupted_words: tuple[str, ...]
    answer_word: str
    wrong_word: str | None = None
    passes: int = 0  # forward passes the sweep ran, the clean and corrupted runs included

    @property
    def normalised(self) -> Tensor:
        """(m − m_corrupted) / (m_clean − m_corrupted) per place: 0 = corrupted, 1 = clean."""
        return normalised(self.values, self.clean, self.corrupted)

    @property
    def axes(self) -> tuple[str, str]:
        """The names of the two axes of `values`: ("layer", "position") or ("layer", "head")."""
        return SITES[self.site]

    def place_label(self, index: int) -> str:
        """The label of column `index`: the position's token (clean/corrupted where they differ), or the head."""
        if self.site == "head_out":
            return f"head {index}"
        clean, corrupted = self.clean_words[index], self.corrupted_words[index]
        return repr(clean) if clean == corrupted else f"{clean!r}/{corrupted!r}"


def check_site(site: str) -> None:
    """InputError unless `site` is one patching sweeps over."""
    if site not in SITES:
        raise InputError(f"patching site must be one of {', '.join(SITES)}, got {site!r}", "site")


def check_pair(clean: Sequence[int], corrupted: Sequence[int]) -> None:
    """InputError unless the two prompts are non-empty and of the same length in tokens."""
    if not len(clean) or not len(corrupted):
        raise InputError("the clean and the corrupted prompt must each have at least one token")
    if len(clean) != len(corrupted):
        raise InputError(f"the clean prompt is {len(clean)} tokens and the corrupted one {len(corrupted)}: patching "
                         "moves each position to the same position, so both must have the same number of tokens")


# ---- tables ---------------------------------------------------------------------------------------------

def patching_rows(result: PatchingResult) -> list[dict]:
    """One record per patched place: layer, position or head, its token(s), m raw and normalised (full precision)."""
    first, second = result.axes
    values, shares = result.values, result.normalised
    rows = []
    for layer in range(values.shape[0]):
        for place in range(values.shape[1]):
            row = {"layer": layer, second: place}
            if second == "position":
                row["clean_token"] = result.clean_words[place]
                row["corrupted_token"] = result.corrupted_words[place]
            row["metric"] = float(values[layer, place])
            row["normalised"] = float(shares[layer, place])
            rows.append(row)
    return rows


def patching_matrix(result: PatchingResult) -> Table:
    """The normalised sweep as a matrix: one row per layer, one column per position (or head)."""
    shares = result.normalised
    header = ["layer", *(f"{i} {result.place_label(i)}" if result.site == "resid_pre" else str(i)
                         for i in range(shares.shape[1]))]
    rows = [[layer, *(float(v) for v in shares[layer])] for layer in range(shares.shape[0])]
    what = METRIC_WORDS[result.contrast.metric]
    caption = (f"activation patching of {SITE_WORDS[result.site]}: {what}, normalised (0 = corrupted "
               f"{result.corrupted:.4g}, 1 = clean {result.clean:.4g}); rows are layers, columns "
               f"{'positions' if result.site == 'resid_pre' else 'heads'}")
    return Table(header, rows, caption)


def as_ids(ids: Sequence[int] | Tensor, device: torch.device) -> Tensor:
    """A prompt's ids as a [1, T] int64 tensor on `device`."""
    return torch.as_tensor(list(map(int, ids)), dtype=torch.long, device=device).unsqueeze(0)
