"""Removing layer norm by fine-tuning (Heimersheim 2024): switch the sites to fixed σ one after another while
training goes on, then write the result as a model that needs no layer norm.

    step 0 … 10 %     fine-tune with layer norm
    10 % … 60 %       at each scheduled step, measure a site's σ on the current weights and fix it there
    60 % … 100 %      fine-tune with every site fixed: the model is linear between its nonlinearities
    export            every fixed-σ site written in the ε = 1e12 convention (lnfree.py): transformers runs it
                      unchanged, and this package loads it as the exact norm="none" model
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from .data import TokenData, windows
from .export import save_model
from .lnfree import calibrate_sigma, fix_sigma, ln_free_checkpoint, removal_order, removal_schedule
from .model import GPT2
from .train import LogRow, TrainSettings, train

CALIBRATION_WINDOWS = 8  # training windows whose σ is averaged when a site is switched


def calibration_batch(data: TokenData, context: int, step: int, seed: int, device: torch.device) -> torch.Tensor:
    """The same CALIBRATION_WINDOWS training windows in every process (seeded by the step): [n, context]."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(len(data.train) - context, (CALIBRATION_WINDOWS,), generator=generator)
    return windows(data.train, starts, context)[0].to(device)


def switcher(model: GPT2, data: TokenData, settings: TrainSettings, progress: bool):
    """The train() hook that fixes the scheduled sites at their step, each with σ measured right then."""
    order = removal_order(model)
    schedule = removal_schedule(order, settings.steps)
    context = settings.context or model.config.n_ctx
    main = not dist.is_initialized() or dist.get_rank() == 0

    def before_step(step: int) -> None:
        due = schedule.get(step, [])
        if not due:
            return
        device = model.wte.weight.device
        scales = calibrate_sigma(model, [calibration_batch(data, context, step, settings.seed, device)])
        for site in due:
            fix_sigma(model, site, scales[site][0])
            done = order.index(site) + 1
            if main and progress:
                tqdm.write(f"step {step}: {site} -> fixed σ = {scales[site][0]:.4g}  ({done}/{len(order)} sites)")

    return before_step


def remove_layer_norm(model: GPT2, data: TokenData, tokenizer_source: str | os.PathLike, out: str | os.PathLike,
                      settings: TrainSettings = TrainSettings(), *, device: str | torch.device = "cpu",
                      resume: bool = False, progress: bool = True) -> list[LogRow]:
    """Fine-tune `model` while removing its layer norms; write the LN-free model into `out`.

    The run itself (checkpoints of the fixed-σ model, optimiser state, log.csv) lives in `out/run`, where
    --resume finds it; `out` holds the final LN-free checkpoint with its tokenizer files."""
    out = Path(out)
    log = train(model, data, tokenizer_source, out / "run", settings, device=device, resume=resume,
                progress=progress, before_step=switcher(model, data, settings, progress))
    if not dist.is_initialized() or dist.get_rank() == 0:
        save_model(ln_free_checkpoint(model), out, tokenizer_source)
    return log
