"""A model with its tokenizer, from one source: the one loader every command and script uses.

The tokenizer is read from beside the weights unless another source is given, and is refused when it has ids
the model's vocabulary has no row for (a model may pad its vocabulary, as GPT-2's 50257 words are padded to a
multiple of 64 by some checkpoints; never the other way).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..model.gpt2 import GPT2
from .tokenizer import Tokenizer


def load_model_and_tokenizer(weights: str | os.PathLike, tokenizer: str | os.PathLike | None = None, *,
                             device: str | torch.device = "cpu", dtype: torch.dtype | None = None
                             ) -> tuple[GPT2, Tokenizer]:
    """The model from `weights` and the tokenizer from `tokenizer` (default: beside the weights).

    CheckpointError if the tokenizer has ids the model's vocabulary has no row for."""
    if tokenizer is None:  # a single .safetensors file: look for vocab.json/merges.txt in its folder
        tokenizer = Path(weights).parent if Path(weights).is_file() else weights
    model = GPT2.from_pretrained(weights, device=device, dtype=dtype or torch.float32)
    words = Tokenizer.from_pretrained(tokenizer)
    if words.n_vocab > model.config.vocab_size:
        raise CheckpointError(f"the tokenizer from {tokenizer} has {words.n_vocab} ids but the model from {weights} "
                              f"has {model.config.vocab_size} words: give the tokenizer the model was trained with "
                              f"(--tokenizer)")
    return model, words
