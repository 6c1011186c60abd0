"""Will a training step fit? Its memory estimated from the shape, the micro-batch and the context, checked before
anything is allocated against the one memory probe (minigpt_geom/memory.py)."""

from __future__ import annotations

from ..config import GPT2Config
from ..memory import FLOAT32, model_bytes
from .loss import chunk_rows

INDEX = 8 + 4  # bytes of one window start: int64, and the float32 it is cut from (evaluate's linspace)


def training_bytes(config: GPT2Config, micro_batch: int, context: int) -> int:
    """One training step: weights, gradients and AdamW's two moments (4 copies), plus the activations kept for
    the backward pass, about B·T·L·(34d + 5hT) 16-bit values (Korthikanti et al. 2022), twice that in float32,
    plus one chunk of logits (loss.py: the [B, T, vocab] logits are never held whole) and ∂L/∂W [vocab, d]."""
    tokens = micro_batch * context
    activations = 2 * tokens * config.n_layer * (34 * config.n_embd + 5 * config.n_head * context)
    logits = chunk_rows(config.vocab_size) * config.vocab_size * FLOAT32 + config.vocab_size * config.n_embd * FLOAT32
    return 4 * model_bytes(config) + activations + logits


def window_starts_bytes(windows: int) -> int:
    """The start positions of `windows` windows, drawn (a batch) or spaced (an evaluation) all at once."""
    return windows * INDEX
