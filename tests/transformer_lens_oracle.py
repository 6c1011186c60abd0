"""TransformerLens 4.x as an independent oracle for the causal experiments, on a checkpoint the tests write.

The bridge wraps a copy of the Hugging Face model loaded from the folder (it rewrites the module it is given),
in compatibility mode without any weight processing, so that its hooks see the raw GPT-2 of the files. Tests
that use it skip, naming the `lens` extra, where transformer-lens is not installed."""

from __future__ import annotations

from pathlib import Path

from helpers import load_hf, needs


def bridge(folder: Path):
    """A TransformerBridge over transformers' own load of the checkpoint in `folder`."""
    needs("transformer_lens")
    from transformer_lens.model_bridge import TransformerBridge

    wrapped = TransformerBridge.boot_transformers(str(folder), hf_model=load_hf(folder), device="cpu")
    wrapped.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    return wrapped.eval()


def logit_difference(answer: int, wrong: int):
    """The patching metric TransformerLens calls on its logits [1, T, V]: z_answer − z_wrong at the last position."""
    return lambda logits: logits[0, -1, answer] - logits[0, -1, wrong]
