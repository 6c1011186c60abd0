"""bfloat16 against float32 on the same weights (the float32 model is the oracle, itself checked against
transformers in test_parity), and the GPU benches' behaviour without a GPU.

Tolerances come from measurement on the small random model (2 layers, d = 48, vocab 101; 8 inputs of 4x32):
top-1 agreement 99.2-100%, max |Δ log p| 0.018-0.023, mean |Δ log p| 0.0033-0.0034; the traced diagnostics
within 0.3% of the float32 ones (relative to each field's largest value). The bounds below leave about 2x.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from minigpt_geom import GPT2
from minigpt_geom.model.fused import FUSED
from minigpt_geom.model.trace import TraceRequest
from helpers import SMALL

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(tiny_checkpoint):
    folder = tiny_checkpoint
    return GPT2.from_pretrained(folder), GPT2.from_pretrained(folder, dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def idx():
    return torch.randint(0, SMALL["vocab_size"], (4, 32), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_sphere_projection_equals_centre_then_normalise(dtype):
    # The fused kernel against steps 1-2 written out in float64 NumPy on the same (rounded) inputs: rows far
    # off H with a large norm, where half-precision statistics would lose digits. Half inputs keep float32 μ, σ.
    x = (torch.randn(64, 768, generator=torch.Generator().manual_seed(0)) * 30 + 200).to(dtype)
    rows = x.double().numpy()
    centred = rows - rows.mean(-1, keepdims=True)
    expected = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + 1e-5)
    rounding = 2**-23 if dtype == torch.float32 else 2**-8  # one rounding of the result, relative; bfloat16
    # statistics of the bfloat16 rows themselves would miss this bound 200-fold
    error = np.abs(FUSED.sphere_projection(x, 1e-5).double().numpy() - expected)
    assert (error <= 2 * rounding * np.abs(expected) + 1e-5).all()  # measured: 0.09 (float32), 0.98 (bfloat16)


def test_bfloat16_logits_agree_with_float32(models, idx):
    float32, bfloat16 = models
    assert all(p.dtype == torch.bfloat16 for p in bfloat16.parameters())
    with torch.no_grad():
        log_p = torch.log_softmax(float32(idx), dim=-1)
        logits = bfloat16(idx)
    assert logits.dtype == torch.bfloat16
    log_q = torch.log_softmax(logits.float(), dim=-1)
    difference = (log_p - log_q).abs()
    assert (log_p.argmax(-1) == log_q.argmax(-1)).float().mean() >= 0.97
    assert difference.max() <= 0.05
    assert 1e-4 <= difference.mean() <= 0.007  # the lower bound: bfloat16 really computed in bfloat16


def test_traced_bfloat16_diagnostics_are_float32_finite_and_close(models, idx):
    float32, bfloat16 = models
    request = TraceRequest(states=True, patterns=True)
    with torch.no_grad():
        _, reference = float32(idx, trace=request)
        logits, trace = bfloat16(idx, trace=request)
        untraced = bfloat16(idx)
    # the traced path (explicit float32 pattern) and the fused one round differently, within bfloat16's precision
    assert (logits.float() - untraced.float()).abs().max() <= 0.05
    assert trace.states.dtype == torch.bfloat16  # the residual states are the model's own numbers
    expected = reference.flat()
    for name, tensor in trace.flat().items():
        if name == "states":
            continue
        assert tensor.dtype == torch.float32, name
        assert torch.isfinite(tensor).all(), name
        scale = expected[name].abs().max()
        assert (tensor - expected[name]).abs().max() <= 0.01 * scale, name
    assert torch.allclose(trace.attention.pattern.sum(-1), torch.ones(()), atol=1e-5)


@pytest.mark.subprocess
@pytest.mark.parametrize("script", ["forward.py", "trace.py"])
def test_gpu_benches_say_not_measured_without_cuda(script):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--gpu"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"bench/{script} --gpu: not measured (no CUDA device)"
