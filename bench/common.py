"""Shared bench helpers: a random 124M-shape checkpoint on disk and a timer."""

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
