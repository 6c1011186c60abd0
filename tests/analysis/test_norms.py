"""`norms`: each variant's predictions against the model's own, checked with transformers and NumPy."""

from __future__ import annotations

import math

import numpy as np
import torch

from helpers import load_hf
from minigpt_geom import GPT2
from minigpt_geom.analysis.norms import compare_norms
from minigpt_geom.cli import main
from minigpt_geom.text.tokenizer import Tokenizer

TEXT = "To kill two birds with one stone, the cat sat on the mat."


def log_softmax(logits: torch.Tensor) -> np.ndarray:
    x = logits.double().numpy()
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_compare_norms_against_independent_computation(tiny_checkpoint):
    idx = torch.tensor([Tokenizer.from_pretrained(tiny_checkpoint).encode(TEXT)])
    model = GPT2.from_pretrained(tiny_checkpoint)
    rows = {r.variant: r for r in compare_norms(model, idx)}
    assert {"own (layernorm)", "layernorm", "rmsnorm", "sphere", "none", "dyt", "fixed_sigma"} == set(rows)
    assert all(block.ln_1.variant.name == "layernorm" for block in model.h)  # restored

    hf = load_hf(tiny_checkpoint)
    with torch.no_grad():
        loss = hf(idx, labels=idx).loss.item()  # mean next-token cross-entropy
    for own in ("own (layernorm)", "layernorm"):
        assert math.isclose(rows[own].perplexity, math.exp(loss), rel_tol=1e-5)
        assert rows[own].kl_from_own == 0 and rows[own].top1_agreement == 1
    # fixed σ was never calibrated on these weights: said in words, no number
    assert rows["fixed_sigma"].perplexity is None and "calibrate" in rows["fixed_sigma"].problem

    with torch.no_grad():
        default = log_softmax(hf(idx).logits)
        variant = log_softmax(GPT2.from_pretrained(tiny_checkpoint, norm="rmsnorm")(idx))
    kl = (np.exp(default) * (default - variant)).sum(-1).mean()
    agreement = (default.argmax(-1) == variant.argmax(-1)).mean()
    assert math.isclose(rows["rmsnorm"].kl_from_own, kl, rel_tol=1e-4, abs_tol=1e-7)
    assert rows["rmsnorm"].top1_agreement == agreement


def test_norms_command(tiny_checkpoint, capsys):
    assert main(["norms", TEXT, "--weights", str(tiny_checkpoint), "--variants", "layernorm", "none"]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "own (layernorm)" in out and "none" in out and "rmsnorm" not in out
    assert "nan" not in out and "inf" not in out


def test_comparison_never_touches_the_model_forwards_running_beside_it(tiny_checkpoint):
    """The norms comparison on one thread, plain forwards of the same model on another: every forward is exact."""
    import threading

    model = GPT2.from_pretrained(tiny_checkpoint)
    idx = torch.randint(0, 101, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(idx)
    mismatches, stop = [], threading.Event()

    def compare_repeatedly() -> None:
        while not stop.is_set():
            compare_norms(model, idx[:1])

    comparer = threading.Thread(target=compare_repeatedly)
    comparer.start()
    try:
        with torch.no_grad():
            for _ in range(60):
                if not torch.equal(model(idx), expected):
                    mismatches.append(1)
    finally:
        stop.set()
        comparer.join()
    assert not mismatches
    assert all(m.variant.name == "layernorm" for m in model.modules() if hasattr(m, "variant"))
