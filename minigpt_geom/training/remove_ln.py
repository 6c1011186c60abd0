"""Removing layer norm by fine-tuning (Heimersheim 2024): switch the sites to fixed σ one after another while
training goes on, then write the result as a model that needs no layer norm.

    step 0 … 10 %     fine-tune with layer norm
    10 % … 60 %       at each scheduled step, measure a site's σ on the current weights and fix it there
                      (each switch is a row of DIR/run/sigma.csv: site, step, σ)
    60 % … 100 %      fine-tune with every site fixed: the model is linear between its nonlinearities
    export            every fixed-σ site written in the ε = 1e12 convention (lnfree.py): transformers runs it
                      unchanged, and this package loads it as the exact norm="none" model

A control run (`control`) fine-tunes the same weights as long with layer norm kept, so the cost of removing it
can be told from the gain of more training.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from ..text.token_files import TokenData, windows
from ..errors import InputError
from ..io.export import check_new_output, save_model
from ..model.lnfree import calibrate_sigma, fix_sigma, ln_free_checkpoint, removal_order, removal_schedule, sites
from ..model.gpt2 import GPT2
from .loop import LogRow, TrainSettings, train

CALIBRATION_WINDOWS = 8  # training windows whose σ is averaged when a site is switched
SIGMA_FIELDS = ["site", "step", "sigma"]


def calibration_batch(data: TokenData, context: int, step: int, seed: int, device: torch.device) -> torch.Tensor:
    """The same CALIBRATION_WINDOWS training windows in every process (seeded by the step): [n, context]."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(len(data.train) - context, (CALIBRATION_WINDOWS,), generator=generator)
    return windows(data.train, starts, context)[0].to(device)


def is_main() -> bool:
    """True in the process that writes (rank 0, or the only one)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def start_sigma_log(path: Path, before_step: int) -> None:
    """sigma.csv with its header and the switches made before `before_step` (those a resumed run keeps)."""
    kept = []
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as f:
            kept = [row for row in csv.DictReader(f) if int(row["step"]) < before_step]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, SIGMA_FIELDS)
        writer.writeheader()
        writer.writerows(kept)


def switcher(model: GPT2, data: TokenData, settings: TrainSettings, progress: bool, sigma_log: Path):
    """The train() hook that fixes the scheduled sites at their step, each with σ measured right then, and
    records each switch in `sigma_log`."""
    order = removal_order(model)
    schedule = removal_schedule(order, settings.steps)
    context = settings.context or model.config.n_ctx
    started = False

    def before_step(step: int) -> None:
        nonlocal started
        if not started and is_main():  # the run's first step (inside its folder's lock): rows from it on go
            start_sigma_log(sigma_log, step)
        started = True
        due = schedule.get(step, [])
        if not due:
            return
        device = model.wte.weight.device
        scales = calibrate_sigma(model, [calibration_batch(data, context, step, settings.seed, device)])
        for site in due:
            sigma = scales[site][0]
            fix_sigma(model, site, sigma)
            if is_main():
                with sigma_log.open("a", newline="", encoding="utf-8") as f:
                    csv.writer(f).writerow([site, step, repr(sigma)])  # every digit
                if progress:
                    done = order.index(site) + 1
                    tqdm.write(f"step {step}: {site} -> fixed σ = {sigma:.4g}  ({done}/{len(order)} sites)")

    return before_step


def check_removable(model: GPT2) -> None:
    """InputError for a model with no layer norm left to remove (an LN-free checkpoint, or norm="none")."""
    if not any(model.get_submodule(site).variant.name in ("layernorm", "fixed_sigma") for site in sites(model)):
        kinds = sorted({model.get_submodule(site).variant.name for site in sites(model)})
        raise InputError(f"this model has no layer norm to remove (its sites are {', '.join(kinds)})")


def remove_layer_norm(model: GPT2, data: TokenData, tokenizer_source: str | os.PathLike, out: str | os.PathLike,
                      settings: TrainSettings = TrainSettings(), *, device: str | torch.device = "cpu",
                      resume: bool = False, overwrite: bool = False, progress: bool = True) -> list[LogRow]:
    """Fine-tune `model` while removing its layer norms; write the LN-free model into `out`.

    The run itself (checkpoints of the fixed-σ model, optimiser state, log.csv, sigma.csv) lives in `out/run`,
    where --resume finds it; `out` holds the final LN-free checkpoint with its tokenizer files."""
    out = Path(out)
    check_removable(model)
    check_new_output(out, resume=resume, overwrite=overwrite)
    run = out / "run"
    log = train(model, data, tokenizer_source, run, settings, device=device, resume=resume, overwrite=overwrite,
                progress=progress, before_step=switcher(model, data, settings, progress, run / "sigma.csv"))
    if is_main():
        save_model(ln_free_checkpoint(model), out, tokenizer_source)
    return log


def control_run(model: GPT2, data: TokenData, tokenizer_source: str | os.PathLike, out: str | os.PathLike,
                settings: TrainSettings = TrainSettings(), **options) -> list[LogRow]:
    """The same fine-tune with layer norm kept, in `out/control`: what more training alone gives."""
    return train(model, data, tokenizer_source, Path(out) / "control", settings, **options)
