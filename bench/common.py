"""Shared bench helpers: a random 124M-shape checkpoint on disk, timers, FLOP counts and the CPU's bfloat16 support."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import torch


def random_checkpoint(folder: Path, seed: int = 0, **shape) -> Path:
    """Write a random transformers GPT2LMHeadModel (124M shape by default) with save_pretrained; returns folder."""
    from transformers import GPT2Config, GPT2LMHeadModel

    if (folder / "model.safetensors").exists():
        return folder
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**shape))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or "ln_f" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
    model.save_pretrained(str(folder))
    return folder


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_seconds(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each call, timed in turn (a, b, c, a, b, c, ...) after one warm-up each,
    so that drifts in machine load hit every contender alike."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def timed(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """fn under inference mode, waiting for the GPU to finish."""
    def call():
        with torch.inference_mode():
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return call


def gpu_peak_flops(dtype: torch.dtype) -> float | None:
    """Dense peak FLOP/s of the current CUDA device for dtype, when known (H100/H200 SXM figures)."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    if "H100" in name or "H200" in name:
        return {torch.bfloat16: 989e12, torch.float16: 989e12, torch.float32: 67e12}.get(dtype)
    if "A100" in name:
        return {torch.bfloat16: 312e12, torch.float16: 312e12, torch.float32: 19.5e12}.get(dtype)
    return None


def matmul_parameters(config) -> int:
    """N, the weights a token's forward pass multiplies by: q, k, v, o and the MLP's two (12·d² a layer) and
    the unembedding (vocab·d). The position table is only looked up, and the token table counts once (tied)."""
    return config.n_layer * 12 * config.n_embd**2 + config.vocab_size * config.n_embd


def forward_flops_per_token(config) -> int:
    """2·N FLOPs a token for a forward pass (one multiply and one add per weight; attention's T² terms left out,
    as in the usual MFU convention)."""
    return 2 * matmul_parameters(config)


def cpu_description() -> str:
    """The CPU's vector capability as torch sees it, and whether oneDNN has a native bfloat16 path."""
    return (f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"oneDNN bfloat16 {'yes' if torch.ops.mkldnn._is_mkldnn_bf16_supported() else 'no'}, "
            f"AMX {'yes' if torch.cpu._is_amx_tile_supported() else 'no'}")


def bfloat16_matmul_slowdown(n: int = 256) -> float:
    """How many times slower an n×n bfloat16 matrix product is than a float32 one on this CPU.

    Below 1 on CPUs with AVX-512 BF16 or AMX; far above 1 (a scalar fallback) on CPUs without them."""
    a = torch.randn(n, n)
    seconds = interleaved_seconds({"f32": lambda: a @ a, "bf16": lambda b=a.bfloat16(): b @ b}, repeats=5)
    return seconds["bf16"] / seconds["f32"]


def logit_agreement(reference: torch.Tensor, other: torch.Tensor) -> tuple[float, float]:
    """(top-1 agreement, max |Δ log p|) of two logits tensors [..., vocab], log p computed in float32."""
    log_p, log_q = torch.log_softmax(reference.float(), -1), torch.log_softmax(other.float(), -1)
    top1 = (log_p.argmax(-1) == log_q.argmax(-1)).float().mean().item()
    return top1, (log_p - log_q).abs().max().item()


def gpu_or_not_measured(name: str) -> bool:
    """True when CUDA is there; otherwise say that the GPU figures of `name` were not measured."""
    if torch.cuda.is_available():
        return True
    print(f"{name} --gpu: not measured (no CUDA device)", flush=True)
    return False
