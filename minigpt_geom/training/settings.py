"""The settings of a training run, declared once (each with its command-line option), and its learning-rate
schedule. No torch here: the command line builds its parser from these fields without importing it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from ..config import FLOAT32_MAX, check_probability
from ..errors import InputError


class SettingError(InputError):
    """A training setting out of range; `field` names it (the command line names its option instead)."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name} {problem}")
        self.field = field_name
        self.problem = problem


def option(default, flag: str | None, help: str, **argparse_options):
    """A setting, with the command-line option that sets it (None: set by another option, or not at all)."""
    return field(default=default, metadata={"flag": flag, "help": help, **argparse_options})


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides a run's path besides the model and the data (nanoGPT's defaults, scaled down).

    Each field is declared once, with its option: commands/train.py builds its parser from these fields."""

    steps: int = option(1000, "--steps", "optimiser steps of the whole schedule")
    batch_size: int = option(16, "--batch-size", "windows per optimiser step, all processes together", metavar="N")
    micro_batch: int | None = option(None, "--micro-batch", "windows per forward pass of one process; the rest is "
                                     "gradient accumulation (default: batch size / processes)", metavar="N")
    context: int | None = option(None, "--context", "window length in tokens (default: the model's context)",
                                 metavar="T")
    learning_rate: float = option(6e-4, "--lr", "peak learning rate, reached at the end of the warm-up",
                                  metavar="RATE")
    min_learning_rate: float | None = option(None, "--min-lr", "learning rate at the last step (default: lr/10)",
                                              metavar="RATE")
    warmup_steps: int = option(100, "--warmup", "linear warm-up steps", metavar="STEPS")
    weight_decay: float = option(0.1, "--weight-decay", "AdamW weight decay of the matrices", metavar="W")
    betas: tuple[float, float] = option((0.9, 0.95), None, "AdamW's β1, β2")
    dropout: float = option(0.0, "--dropout", "probability p of GPT-2's three dropouts (of x_0, of the attention "
                            "weights, of each update before it joins the residual), in training only; saved in "
                            "config.json as transformers' embd_pdrop, attn_pdrop, resid_pdrop", metavar="P")
    grad_clip: float = option(1.0, "--grad-clip", "largest gradient norm ‖g‖, 0 for no clipping", metavar="NORM")
    seed: int = option(0, None, "seed of the batches (and of a new model's initialisation)")
    eval_interval: int = option(100, "--eval-interval", "evaluate, sample and save every this many steps and at "
                                "the end", metavar="STEPS")
    eval_windows: int = option(32, "--eval-windows", "held-out windows per evaluation, evenly spaced", metavar="N")
    sample_tokens: int = option(32, "--sample-tokens", "length of the sample at each evaluation, 0 for none",
                                metavar="N")
    log_interval: int = option(1, "--log-interval", "a row of log.csv every this many steps", metavar="STEPS")
    dtype: str = option("auto", "--dtype", "bfloat16 autocasts the forward pass; float16 is refused (it needs loss "
                        "scaling) (default: bfloat16 on CUDA, else float32)", choices=("float32", "bfloat16", "float16"))
    stop_at: int | None = option(None, "--stop-at", "end after this step, saving a checkpoint to --resume from "
                                 "(the schedule still spans --steps)", metavar="STEP")
    compile: bool = option(False, "--compile", "torch.compile the forward pass (faster on GPUs: see bench/train.py)")

    def __post_init__(self) -> None:
        for name in ("steps", "warmup_steps", "seed", "sample_tokens"):
            at_least(name, getattr(self, name), 0)
        for name in ("batch_size", "eval_interval", "eval_windows", "log_interval"):
            at_least(name, getattr(self, name), 1)
        for name in ("micro_batch", "context"):
            if getattr(self, name) is not None:
                at_least(name, getattr(self, name), 1)
        if self.stop_at is not None:
            at_least("stop_at", self.stop_at, 0)
        if self.seed >= 2**64:  # what torch's generators take
            raise SettingError("seed", f"must be below 2^64, got {self.seed}")
        for name in ("learning_rate", "min_learning_rate", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise SettingError(name, f"must be a finite number ≥ 0, got {value!r}")
        try:
            check_probability("dropout", self.dropout)
        except (TypeError, ValueError) as error:
            raise SettingError("dropout", str(error).removeprefix("dropout ")) from None
        if self.learning_rate == 0:
            raise SettingError("learning_rate", "must be > 0, got 0")
        if self.min_learning_rate is not None and self.min_learning_rate > self.learning_rate:
            raise SettingError("min_learning_rate", f"({self.min_learning_rate:g}) must not exceed the peak "
                               f"learning_rate ({self.learning_rate:g})")
        if not (isinstance(self.betas, tuple) and len(self.betas) == 2
                and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas)):
            raise SettingError("betas", f"must be two numbers in [0, 1), got {self.betas!r}")
        # AdamW's first step moves θ by lr / (1 − β1) and decays it by lr·λ: float32 numbers, like θ itself
        largest = max(self.learning_rate / (1 - self.betas[0]), self.learning_rate * self.weight_decay)
        if largest > FLOAT32_MAX:
            raise SettingError("learning_rate", f"({self.learning_rate:g}) is too large: AdamW's step of "
                               f"{largest:.3g} overflows float32 ({FLOAT32_MAX:.3g})")
        if not isinstance(self.compile, bool):
            raise SettingError("compile", f"must be true or false, got {self.compile!r}")
        if self.dtype == "float16":
            raise SettingError("dtype", "float16 cannot train without loss scaling: use bfloat16 (or float32)")
        if self.dtype not in ("auto", "float32", "bfloat16"):  # auto: bfloat16 on CUDA, float32 elsewhere
            raise SettingError("dtype", f"must be auto, float32 or bfloat16, got {self.dtype!r}")

    @property
    def final_learning_rate(self) -> float:
        """min_lr, the rate the cosine decays to."""
        return self.learning_rate / 10 if self.min_learning_rate is None else self.min_learning_rate


def at_least(name: str, value: object, low: int) -> None:
    """SettingError unless value is an integer ≥ low."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SettingError(name, f"must be an integer ≥ {low}, got {value!r}")


def fields_by_name() -> dict:
    """TrainSettings' fields by name."""
    return {f.name: f for f in fields(TrainSettings)}


# A resumed run may change these (they do not change the path already taken); every other setting is the saved one.
RESUMABLE_CHANGES = ("steps", "stop_at", "eval_interval", "eval_windows", "sample_tokens", "log_interval",
                     "micro_batch", "compile")


def settings_from_saved(saved: dict, changes: dict) -> TrainSettings:
    """The saved run's settings with `changes` applied; SettingError naming a change a resumed run cannot make.

    The saved stop_at is not reused: a run stopped early with --stop-at goes on to the end unless told again."""
    known = fields_by_name()
    unknown = sorted(set(saved) - set(known))
    if unknown:
        raise SettingError(unknown[0], "is no training setting (the saved run's trainer_state.json is damaged)")
    betas = saved.get("betas", TrainSettings.betas)
    values = {**saved, "betas": tuple(betas) if isinstance(betas, list) else betas,  # JSON keeps a tuple as a list
              "stop_at": None}
    for name, value in changes.items():
        if value != values.get(name, known[name].default) and name not in RESUMABLE_CHANGES:
            raise SettingError(name, f"was {values.get(name, known[name].default)!r} in the saved run, so it "
                               f"cannot be {value!r} on resume (a resumed run may change only its length, evaluations, "
                               f"samples, log interval, micro-batch and compilation)")
        values[name] = value
    return TrainSettings(**values)


def schedule_warning(settings: TrainSettings) -> str | None:
    """A line saying why the run will never train at its peak learning rate, or None."""
    stop = settings.steps if settings.stop_at is None else min(settings.stop_at, settings.steps)
    if settings.warmup_steps < stop or stop == 0:
        return None
    reached = learning_rate(stop - 1, settings)
    return (f"the warm-up ({settings.warmup_steps} steps) does not end before the run does (step {stop}): the "
            f"learning rate rises to {reached:.2g} only, never its peak {settings.learning_rate:.2g}; "
            f"give more steps or a shorter warm-up")


def learning_rate(step: int, settings: TrainSettings) -> float:
    """Linear warm-up to the peak over warmup_steps (step 0 gets peak/warmup), then a half cosine to min_lr."""
    peak, final = settings.learning_rate, settings.final_learning_rate
    if step < settings.warmup_steps:
        return peak * (step + 1) / settings.warmup_steps
    decay_steps = max(settings.steps - settings.warmup_steps, 1)
    progress = min((step - settings.warmup_steps) / decay_steps, 1.0)
    return final + 0.5 * (1 + math.cos(math.pi * progress)) * (peak - final)
