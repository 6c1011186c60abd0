"""Many edited copies of one prompt in a batch: how many fit a memory budget, and the chunks they run in.

A patching sweep over L layers × T positions is L·T forward passes done one by one (what TransformerLens's
patching helpers do). Here each patched run is one row of a batch, and the rows run together, as many per
pass as the budget allows: a few large matrix products instead of hundreds of small ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..config import GPT2Config
from ..errors import InputError
from ..memory import available_bytes
from ..model.gpt2 import GPT2

BUDGET_SHARE = 8  # a sweep takes at most 1/8 of the device's memory by default: room for the model and the rest


def row_bytes(config: GPT2Config, T: int, element_size: int = 4, all_positions: bool = False) -> int:
    """Memory one row of T tokens holds at the peak of an inference forward pass, within a factor of about two:
    the residual, q, k, v and a head's output (6Td), the MLP's hidden layer and its GELU (8Td), the scores and
    the pattern (2HT²), the logits of the last position (V) or of every position (TV, twice: a loss's
    log-softmax beside them); doubled for what the allocator keeps around."""
    d, H = config.n_embd, config.n_head
    logits = 2 * T * config.vocab_size if all_positions else config.vocab_size
    return 2 * element_size * (14 * T * d + 2 * H * T * T + logits)


def memory_budget(device: torch.device) -> int:
    """The bytes a sweep may use on `device` by default: a share of its memory (training/memory.py's probe)."""
    return available_bytes(device) // BUDGET_SHARE


def rows_per_pass(config: GPT2Config, T: int, budget: int, element_size: int = 4, all_positions: bool = False
                  ) -> int:
    """How many rows of T tokens one forward pass may hold within `budget` bytes (at least one)."""
    if budget <= 0:
        raise InputError(f"the memory budget must be positive, got {budget} bytes", "budget")
    return max(1, budget // row_bytes(config, T, element_size, all_positions))


def pass_rows(model: GPT2, T: int, rows: int | None, all_positions: bool = False) -> int:
    """Rows per forward pass: `rows` if given, else as many as the memory budget of the model's device holds."""
    if rows is not None:
        return rows
    weight = model.wte.weight
    return rows_per_pass(model.config, T, memory_budget(weight.device), weight.element_size(), all_positions)


def chunks(n: int, size: int) -> Iterator[range]:
    """range(0, n) cut into consecutive ranges of at most `size` items."""
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def by_layer(cells: Tensor, per_layer: int) -> Iterator[tuple[int, Tensor]]:
    """Cells numbered l·P + p (P = per_layer places a layer) grouped by layer: (l, that layer's cells), l rising."""
    for layer in cells.div(per_layer, rounding_mode="floor").unique().tolist():
        yield layer, cells[cells // per_layer == layer]
