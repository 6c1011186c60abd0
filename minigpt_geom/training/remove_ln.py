"""Removing layer norm by fine-tuning (Heimersheim 2024): switch the sites to fixed σ one after another while
training goes on, each σ_s measured on the current weights, then write the result as a model that needs no
layer norm (the fixed-σ map and its fold are the model's: model/lnfree.py).

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
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm import tqdm

from ..config import site_name
from ..errors import CheckpointError, InputError
from ..io.checkpoint_folder import LOCK_FILE
from ..io.files import folder_lock
from ..model.gpt2 import GPT2
from ..model.lnfree import fix_sigma, ln_free_checkpoint
from ..model.norm_site import SphereDiagnostics
from ..text.token_files import TokenData, windows
from .loop import LogRow, TrainSettings, start_csv, train
from .run_folder import check_new_output
from .settings import SettingError

CALIBRATION_WINDOWS = 8  # training windows whose σ is averaged when a site is switched
SIGMA_FIELDS = ["site", "step", "sigma"]


# ---- calibration ----------------------------------------------------------------------------------


def site_sigma(site: SphereDiagnostics, d: int) -> Tensor:
    """σ of each token at a site, from its diagnostics: σ² = ‖x‖²/d − μ² = (‖x‖² − mean_component²)/d."""
    return ((site.input_norm.double() ** 2 - site.mean_component.double() ** 2) / d).clamp_min(0).sqrt()


@torch.no_grad()
def calibrate_sigma(model: GPT2, batches: Iterable[Tensor]) -> dict[str, tuple[float, float]]:
    """{site: (mean σ over positions ≥ 1, mean σ at position 0)} of each site's input, over windows [B, T].

    Measured with the traced forward pass itself. Position 0 is kept apart: GPT-2's first residual vector is
    far longer than the rest, so it would dominate the average."""
    totals = {name: [0.0, 0.0] for name in model.norm_sites()}
    rest = first = 0  # positions counted
    for idx in batches:
        _, trace = model(idx, trace=True)
        sigmas = {"ln_f": site_sigma(trace.ln_f, model.config.n_embd)}  # [B, T]
        for kind in ("ln_1", "ln_2"):
            stacked = site_sigma(getattr(trace, kind), model.config.n_embd)  # [L, B, T]
            sigmas.update({site_name(layer, kind): stacked[layer] for layer in range(trace.n_layer)})
        for name, sigma in sigmas.items():
            totals[name][0] += sigma[:, 1:].sum().item()
            totals[name][1] += sigma[:, 0].sum().item()
        rest, first = rest + idx.shape[0] * (idx.shape[1] - 1), first + idx.shape[0]
    if not first:
        raise ValueError("calibrate_sigma needs at least one window")
    return {name: (a / max(rest, 1), b / first) for name, (a, b) in totals.items()}


# ---- the removal schedule ------------------------------------------------------------------------------


def removal_order(model: GPT2) -> list[str]:
    """Sites in the order they are switched to fixed σ: every MLP site (ln_2), then every attention site
    (ln_1), then ln_f, each from the first layer to the last (modelled on Heimersheim's schedule)."""
    n = model.config.n_layer
    return [site_name(i, "ln_2") for i in range(n)] + [site_name(i, "ln_1") for i in range(n)] + ["ln_f"]


def removal_schedule(order: list[str], steps: int, start: float = 0.1, stop: float = 0.6) -> dict[int, list[str]]:
    """{step: sites switched at that step}: evenly spaced from `start` to `stop` of the run, so the model
    fine-tunes a while with layer norm, then a site at a time, then with no layer norm at all."""
    if steps < 1:
        raise ValueError(f"a removal needs at least one step, got {steps}")
    first, last = round(start * steps), max(round(stop * steps), round(start * steps))
    schedule: dict[int, list[str]] = {}
    for i, site in enumerate(order):
        step = first + (round(i * (last - first) / (len(order) - 1)) if len(order) > 1 else 0)
        schedule.setdefault(min(step, steps - 1), []).append(site)
    return schedule


# ---- the run ---------------------------------------------------------------------------------------------


def calibration_batch(data: TokenData, context: int, step: int, seed: int, device: torch.device) -> torch.Tensor:
    """The same CALIBRATION_WINDOWS training windows in every process (seeded by the step): [n, context]."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(len(data.train) - context, (CALIBRATION_WINDOWS,), generator=generator)
    return windows(data.train, starts, context)[0].to(device)


def is_main() -> bool:
    """True in the process that writes (rank 0, or the only one)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def start_sigma_log(path: Path, before_step: int) -> None:
    """sigma.csv with its header and the switches made before `before_step` (those a resumed run keeps);
    CheckpointError for one that is damaged, as read_log gives for log.csv (it is left as it is)."""
    kept = []
    if path.is_file():
        try:
            with path.open(newline="", encoding="utf-8") as f:
                kept = [[row[key] for key in SIGMA_FIELDS] for row in csv.DictReader(f)
                        if int(row["step"]) < before_step]
        except (KeyError, TypeError, ValueError, csv.Error) as error:  # a cell or a column missing, not a number
            raise CheckpointError(f"{path} is damaged ({' '.join(str(error).split())[:120]}): repair it, or move it "
                                  f"away to resume with a new log") from None
    start_csv(path, SIGMA_FIELDS, kept)


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


def check_steps(settings: TrainSettings) -> None:
    """SettingError for a run with no step: the sites switch to fixed σ during the steps."""
    if settings.steps < 1:
        raise SettingError("steps", f"must be at least 1 to remove layer norm (its sites switch to a fixed σ during "
                           f"the run), got {settings.steps}")


def check_removable(model: GPT2) -> None:
    """InputError for a model with no layer norm left to remove (an LN-free checkpoint, or norm="none")."""
    kinds = sorted({site.variant.name for site in model.norm_sites().values()})
    if not {"layernorm", "fixed_sigma"} & set(kinds):
        raise InputError(f"this model has no layer norm to remove (its sites are {', '.join(kinds)})")


def remove_layer_norm(model: GPT2, data: TokenData, tokenizer_source: str | os.PathLike, out: str | os.PathLike,
                      settings: TrainSettings = TrainSettings(), *, device: str | torch.device = "cpu",
                      resume: bool = False, overwrite: bool = False, progress: bool = True) -> list[LogRow]:
    """Fine-tune `model` while removing its layer norms; write the LN-free model into `out`.

    The run itself (checkpoints of the fixed-σ model, optimiser state, log.csv, sigma.csv) lives in `out/run`,
    where --resume finds it; `out` holds the final LN-free checkpoint with its tokenizer files."""
    out = Path(out)
    check_steps(settings)
    check_removable(model)
    with folder_lock(out, LOCK_FILE) if is_main() else nullcontext():  # `out` as a whole, not only out/run
        check_new_output(out, resume=resume, overwrite=overwrite)
        run = out / "run"
        log = train(model, data, tokenizer_source, run, settings, device=device, resume=resume, overwrite=overwrite,
                    progress=progress, before_step=switcher(model, data, settings, progress, run / "sigma.csv"))
        if is_main():
            ln_free_checkpoint(model).save_pretrained(out, tokenizer_source)
    return log


def control_run(model: GPT2, data: TokenData, tokenizer_source: str | os.PathLike, out: str | os.PathLike,
                settings: TrainSettings = TrainSettings(), **options) -> list[LogRow]:
    """The same fine-tune with layer norm kept, in `out/control`: what more training alone gives."""
    return train(model, data, tokenizer_source, Path(out) / "control", settings, **options)
