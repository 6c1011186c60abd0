"""Will it fit? Estimates of the memory a model or a training step needs, checked before anything is allocated.

The estimates are deliberately rough (within a factor of about two); they exist to refuse, in one line, a size
that cannot fit at all (`--n-embd 65536`, `--batch-size 100000000`), not to predict usage.
"""

from __future__ import annotations

import os

import torch

from ..config import GPT2Config
from ..errors import InputError
from .loss import chunk_rows

FLOAT32 = 4  # bytes


def parameter_count(config: GPT2Config) -> int:
    """Parameters of a GPT-2 of this shape: E, P, L blocks of 12d² + 13d, ln_f (the unembedding is E, tied)."""
    d = config.n_embd
    return (config.vocab_size + config.n_ctx) * d + config.n_layer * (12 * d * d + 13 * d) + 2 * d


def model_bytes(config: GPT2Config) -> int:
    """float32 weights of the model."""
    return parameter_count(config) * FLOAT32


def training_bytes(config: GPT2Config, micro_batch: int, context: int) -> int:
    """One training step: weights, gradients and AdamW's two moments (4 copies), plus the activations kept for
    the backward pass, about B·T·L·(34d + 5hT) 16-bit values (Korthikanti et al. 2022), twice that in float32,
    plus one chunk of logits (loss.py: the [B, T, vocab] logits are never held whole) and ∂L/∂W [vocab, d]."""
    tokens = micro_batch * context
    activations = 2 * tokens * config.n_layer * (34 * config.n_embd + 5 * config.n_head * context)
    logits = chunk_rows(config.vocab_size) * config.vocab_size * FLOAT32 + config.vocab_size * config.n_embd * FLOAT32
    return 4 * model_bytes(config) + activations + logits


def available_bytes(device: torch.device) -> int:
    """The memory of `device`: a GPU's total, or the machine's physical memory for the CPU (and others)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no basis to refuse
        return 2**63


def check_fits(needed: int, device: torch.device, what: str) -> None:
    """InputError when `needed` bytes exceed what `device` has (`what` says what would not fit)."""
    have = available_bytes(device)
    if needed > have:
        raise InputError(f"{what} needs about {needed / 2**30:,.1f} GiB, more than the "
                         f"{have / 2**30:,.1f} GiB of {device.type}: choose a smaller size")
