"""TransformerLens 4.x as an independent oracle for the causal experiments, on a checkpoint a test writes.

The bridge wraps a copy of the Hugging Face model (it rewrites the module it is given), in compatibility mode
without any weight processing, so that its hooks see the raw GPT-2 of the files. Tests that use it skip, by
name, where transformer-lens is not installed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest


def transformer_lens():
    """The transformer_lens package, or skip the test."""
    return pytest.importorskip("transformer_lens", reason="transformer-lens (a test extra) is not installed")


def bridge(hf_model, folder: Path):
    """A TransformerBridge over a copy of `hf_model`, saved in `folder` with its tokenizer files."""
    transformer_lens()
    from transformer_lens.model_bridge import TransformerBridge

    wrapped = TransformerBridge.boot_transformers(str(folder), hf_model=copy.deepcopy(hf_model), device="cpu")
    wrapped.enable_compatibility_mode(no_processing=True)
    return wrapped.eval()


def logit_difference(answer: int, wrong: int):
    """The patching metric TransformerLens calls on its logits [1, T, V]: z_answer − z_wrong at the last position."""
    return lambda logits: logits[0, -1, answer] - logits[0, -1, wrong]
