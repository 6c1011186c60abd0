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


def available_bytes(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device`, the one memory probe: a GPU's free memory, the system's
    MemAvailable on Linux, else the physical memory; None when the system does not say."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):  # not Linux: the physical memory, if the OS says
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None


def check_fits(what: str, needed: int, device: torch.device) -> None:
    """InputError before allocating when `what` (an option, a model, a step) needs more than `device` has
    (`needed` bytes, an estimate)."""
    available = available_bytes(device)
    if available is not None and needed > available:
        raise InputError(f"{what} needs about {needed / 2**30:.1f} GiB on {device}, more than the "
                         f"{available / 2**30:.1f} GiB available: choose a smaller size")
