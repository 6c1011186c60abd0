"""Training GPT-2 with any norm variant, on one process or many (nanoGPT's train.py is the model to follow).

    for step in 0 … steps−1:
        lr    = linear warm-up, then cosine decay to min_lr                      (learning_rate)
        g     = ∇ mean cross-entropy over the global batch of windows, summed micro-batch by micro-batch
        g     = g · min(1, clip / ‖g‖)                                            (gradient clipping)
        θ     = AdamW(θ, g, lr), weight decay on the matrices only
        every eval_interval steps: validation loss, a sample, a checkpoint

Under `torchrun --nproc_per_node N` every process draws the same global batch of windows (one seeded
generator) and takes its own slice of it; DistributedDataParallel averages the gradients, so N processes
follow the path of a single one with the same global batch.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, astuple, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from .config import GPT2Config
from .data import TokenData, cache_folder, load_tokens, prepare, windows
from .errors import InputError
from .export import TrainingState, load_training_state, save_model, save_training_state
from .files import write_text
from .generate import Sampling, generate
from .model import GPT2
from .sphere import NormSpec, SphereNorm
from .tokenizer import Tokenizer


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides a run's path besides the model and the data (nanoGPT's defaults, scaled down)."""

    steps: int = 1000  # optimiser steps of the whole schedule
    batch_size: int = 16  # windows per optimiser step, all processes together (the global batch)
    micro_batch: int | None = None  # windows per forward pass on one process (default: batch_size / processes)
    context: int | None = None  # window length T (default: the model's n_ctx)
    learning_rate: float = 6e-4  # peak, reached at the end of the warm-up
    min_learning_rate: float | None = None  # reached at the last step (default: learning_rate / 10)
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # largest gradient norm ‖g‖ (0: no clipping)
    seed: int = 0
    eval_interval: int = 100  # evaluate, sample and save every this many steps (and at the end)
    eval_windows: int = 32  # validation windows, evenly spaced over the held-out ids
    sample_tokens: int = 32  # length of the sample printed at each evaluation (0: none)
    dtype: str = "auto"  # "float32", or "bfloat16" autocast; auto = bfloat16 on CUDA, float32 on CPU
    stop_at: int | None = None  # end this run after this step, saving a checkpoint; the schedule still spans `steps`
    compile: bool = False  # torch.compile the forward pass (an H200 trained 1.8-2.8x more tokens/s with it)

    def __post_init__(self) -> None:
        for name in ("steps", "warmup_steps", "seed", "sample_tokens"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        for name in ("batch_size", "eval_interval", "eval_windows"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not self.learning_rate > 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise InputError("the learning rate must be > 0, the clipping norm and weight decay ≥ 0")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise InputError(f"dtype must be auto, float32 or bfloat16, got {self.dtype!r}")

    @property
    def final_learning_rate(self) -> float:
        """min_lr, the rate the cosine decays to."""
        return self.learning_rate / 10 if self.min_learning_rate is None else self.min_learning_rate


@dataclass(frozen=True)
class LogRow:
    """One line of log.csv."""

    step: int
    train_loss: float | None  # mean cross-entropy (nats) of the step's global batch, before the update
    val_loss: float | None  # mean cross-entropy on the validation windows, at evaluations
    learning_rate: float
    tokens_per_second: float | None


# ---- initialisation -------------------------------------------------------------------------------


@torch.no_grad()
def init_weights(model: GPT2, seed: int = 0) -> GPT2:
    """GPT-2's initialisation: matrices ~ N(0, 0.02²), residual projections (c_proj) ~ N(0, (0.02/√(2L))²),
    biases 0, γ = 1, β = 0, a variant's scalars at their initial values.

    Each residual update adds to x; 2L of them (attention and MLP in each of L blocks) would grow ‖x‖ like
    √(2L), which the smaller c_proj compensates (GPT-2 paper, section 2.3)."""
    generator = torch.Generator().manual_seed(seed)
    residual_std = 0.02 / math.sqrt(2 * model.config.n_layer)
    for name, p in model.named_parameters():
        if p.dim() == 2:
            std = residual_std if name.endswith("c_proj.weight") else 0.02
            p.copy_(torch.randn(p.shape, generator=generator) * std)
        elif name.endswith("bias"):
            p.zero_()
        elif name.endswith("weight"):  # γ of a norm site
            p.fill_(1.0)
    for module in model.modules():
        if isinstance(module, SphereNorm):
            for scalar, initial in module.variant.parameters.items():
                getattr(module, scalar).fill_(initial)
    return model


def new_model(config: GPT2Config, norm: NormSpec = "layernorm", seed: int = 0) -> GPT2:
    """A freshly initialised GPT2 (see init_weights)."""
    return init_weights(GPT2(config, norm=norm), seed)


# ---- the optimiser and its schedule -----------------------------------------------------------------


def learning_rate(step: int, settings: TrainSettings) -> float:
    """Linear warm-up to the peak over warmup_steps (step 0 gets peak/warmup), then a half cosine to min_lr."""
    peak, final = settings.learning_rate, settings.final_learning_rate
    if step < settings.warmup_steps:
        return peak * (step + 1) / settings.warmup_steps
    decay_steps = max(settings.steps - settings.warmup_steps, 1)
    progress = min((step - settings.warmup_steps) / decay_steps, 1.0)
    return final + 0.5 * (1 + math.cos(math.pi * progress)) * (peak - final)


def make_optimizer(model: GPT2, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW with weight decay on the 2-D parameters (the linear maps and, as nanoGPT, the embeddings)
    and none on biases, γ, β and a variant's scalars; parameters that need no gradient are left out."""
    trained = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trained if p.dim() == 2], "weight_decay": settings.weight_decay},
        {"params": [p for p in trained if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = all(p.is_cuda for p in trained)  # one kernel for every parameter's update on GPUs
    return torch.optim.AdamW(groups, lr=settings.learning_rate, betas=settings.betas, fused=fused or None)


def freeze_unused(model: GPT2) -> None:
    """γ and β of a site whose variant has no affine map (sphere, none) get no gradient: leave them out."""
    for module in model.modules():
        if isinstance(module, SphereNorm) and not module.variant.affine:
            module.weight.requires_grad_(False)
            module.bias.requires_grad_(False)


# ---- many processes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processes:
    """This process's place among those torchrun started (rank 0 of 1 without torchrun) and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0 writes the files and the progress bar."""
        return self.rank == 0


def start_processes(device: str | torch.device = "cpu") -> Processes:
    """Join torchrun's process group when its environment is set (gloo on CPU, NCCL on GPUs)."""
    device = torch.device(device)
    if "RANK" not in os.environ:
        return Processes(0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), device)


def barrier(processes: Processes) -> None:
    """Wait for every process (a no-op for one)."""
    if processes.world > 1:
        dist.barrier()


def total(values: Tensor, processes: Processes) -> Tensor:
    """Σ over the processes of a small tensor (itself for one)."""
    if processes.world > 1:
        dist.all_reduce(values)
    return values


# ---- batches and losses -----------------------------------------------------------------------------


class Logits(torch.nn.Module):
    """ids -> logits by `model.run`: the token files' ids are checked once (check_run), not at every step,
    where the check's idx.min()/max() would make a GPU wait for the CPU and break torch.compile's graph."""

    def __init__(self, model: GPT2) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: Tensor) -> Tensor:
        """idx [B, T] -> logits [B, T, vocab]."""
        return self.model.run(idx)


def next_token_loss(model: torch.nn.Module, x: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of each position's logits [B, T, V] against the id that follows it, nats (float32)."""
    logits = model(x)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction=reduction)


def process_windows(generator: torch.Generator, n_ids: int, settings: TrainSettings, context: int,
                    micro_batch: int, processes: Processes) -> Tensor:
    """Window starts of this process for one step, [accumulation, micro_batch].

    The global batch, [accumulation, processes, micro_batch], is drawn alike everywhere; each process keeps
    its column, so together they cover exactly the windows one process would draw."""
    starts = torch.randint(n_ids - context, (settings.batch_size,), generator=generator)
    return starts.view(-1, processes.world, micro_batch)[:, processes.rank]


def load_corpus(corpus: str | os.PathLike, tokenizer_source: str | os.PathLike, processes: Processes | None = None,
                *, cache_dir: str | os.PathLike | None = None, exclude: Iterable[str | os.PathLike] = (),
                progress: bool = True, **tokenising) -> TokenData:
    """The token files of `corpus` (a prepared folder, or tokenised once into the cache by rank 0 alone);
    `exclude`: folders not read (the run's own); `tokenising`: data.prepare's val_fraction, pattern, split,
    split_seed and backend."""
    processes = processes or Processes(0, 1, torch.device("cpu"))
    backend = tokenising.pop("backend", "auto")  # the ids do not depend on it: not part of the cache's key
    folder = cache_folder(corpus, tokenizer_source, cache_dir=cache_dir, exclude=exclude, **tokenising)
    if processes.main and not (folder / "meta.json").is_file():
        prepare(corpus, tokenizer_source, folder, backend=backend, exclude=exclude, progress=progress, **tokenising)
    barrier(processes)
    return load_tokens(folder)


# ---- one step, one evaluation -------------------------------------------------------------------------


def train_step(trained: torch.nn.Module, optimizer: torch.optim.AdamW, ids: np.ndarray, starts: Tensor,
               context: int, settings: TrainSettings, processes: Processes, autocast) -> float:
    """One optimiser step over this process's windows [accumulation, micro_batch]; returns the global mean loss.

    Each micro-batch adds ∇(loss / accumulation) to the gradients, so after the last one they hold ∇ of
    the mean over this process's windows; DDP then averages them over the processes (on the last backward
    only: no_sync skips the exchange before)."""
    accumulation = starts.shape[0]
    loss_sum = torch.zeros((), device=processes.device)
    for k, micro_starts in enumerate(starts):
        x, y = (t.to(processes.device) for t in windows(ids, micro_starts, context))
        exchange = processes.world == 1 or k == accumulation - 1
        with nullcontext() if exchange else trained.no_sync():
            with autocast:
                loss = next_token_loss(trained, x, y)
            (loss / accumulation).backward()
        loss_sum += loss.detach()
    if settings.grad_clip > 0:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(total(loss_sum / accumulation, processes)) / processes.world


@torch.no_grad()
def evaluate(model: GPT2, ids: np.ndarray, context: int, n_windows: int, micro_batch: int, processes: Processes,
             autocast) -> float:
    """Mean cross-entropy over n_windows windows evenly spaced over ids: the same windows at every evaluation,
    shared out among the processes."""
    starts = torch.linspace(0, len(ids) - context - 1, n_windows).long()[processes.rank::processes.world]
    sums = torch.zeros(2, dtype=torch.float64, device=processes.device)  # Σ loss, number of predictions
    for chunk in starts.split(micro_batch):
        x, y = (t.to(processes.device) for t in windows(ids, chunk, context))
        with autocast:
            sums[0] += next_token_loss(model, x, y, reduction="sum")
        sums[1] += y.numel()
    loss_sum, count = total(sums, processes).tolist()
    return loss_sum / count


def sample_text(model: GPT2, tokenizer: Tokenizer, n_tokens: int, seed: int) -> str:
    """A sample of n_tokens after <|endoftext|> (after id 0 without it), the same seed at every evaluation."""
    eot = tokenizer.special_tokens.get("<|endoftext|>")
    prompt = torch.tensor([[0 if eot is None else eot]], device=model.wte.weight.device)
    n_tokens = min(n_tokens, model.config.n_ctx - 1)
    ids = generate(model, prompt, n_tokens, Sampling(temperature=1.0, seed=seed), eos_id=eot)
    return tokenizer.decode(ids[0, 1:].tolist())


# ---- the log ---------------------------------------------------------------------------------------------

LOG_FIELDS = [f.name for f in fields(LogRow)]


def write_log(path: Path, rows: list[LogRow]) -> None:
    """log.csv: step, train_loss, val_loss, learning_rate, tokens_per_second (empty where not measured)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(LOG_FIELDS)
    for row in rows:
        writer.writerow(["" if v is None else v for v in astuple(row)])
    write_text(path, buffer.getvalue())


def read_log(path: Path) -> list[LogRow]:
    """The rows of a log.csv written by write_log (none if it does not exist)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [LogRow(int(r["step"]), *(float(r[k]) if r[k] else None for k in LOG_FIELDS[1:]))
                for r in csv.DictReader(f)]


# ---- the run -----------------------------------------------------------------------------------------


def train(model: GPT2, data: TokenData, tokenizer_source: str | os.PathLike, out: str | os.PathLike,
          settings: TrainSettings = TrainSettings(), *, device: str | torch.device = "cpu", resume: bool = False,
          progress: bool = True, before_step: Callable[[int], None] | None = None) -> list[LogRow]:
    """Train `model` in place on `data`, writing checkpoints, log.csv and the tokenizer into `out`.

    `before_step(step)`, if given, runs before each optimiser step (remove_ln switches layer norms there).

    With `resume`, the optimiser state, step and batch sampler saved in `out` are restored first (`model`
    must hold `out`'s weights: export.load_model). Returns the log. Under torchrun, every process calls it."""
    processes = start_processes(device)
    out = Path(out)
    context = settings.context or model.config.n_ctx
    micro_batch = settings.micro_batch or max(settings.batch_size // processes.world, 1)
    check_run(model, data, settings, context, micro_batch, processes)
    stop = settings.steps if settings.stop_at is None else min(settings.stop_at, settings.steps)

    model.to(processes.device)
    freeze_unused(model)
    optimizer = make_optimizer(model, settings)
    batches = torch.Generator().manual_seed(settings.seed)  # the one source of randomness of the run
    start, log = 0, []
    if resume:
        state = load_training_state(out, model, optimizer)
        start, log = state.step, [row for row in read_log(out / "log.csv") if row.step < state.step]
        batches.set_state(state.batch_rng)
    if stop < start:
        raise InputError(f"the run in {out} is at step {start}, past the requested stop at step {stop}")

    dtype = settings.dtype if settings.dtype != "auto" else "bfloat16" if processes.device.type == "cuda" else "float32"
    autocast = torch.autocast(processes.device.type, torch.bfloat16) if dtype == "bfloat16" else nullcontext()
    trained = torch.compile(Logits(model)) if settings.compile else Logits(model)
    if processes.world > 1:
        ids = [processes.device.index] if processes.device.type == "cuda" else None
        trained = torch.nn.parallel.DistributedDataParallel(trained, device_ids=ids)
    tokenizer = Tokenizer.from_pretrained(tokenizer_source)
    eot = tokenizer.special_tokens.get("<|endoftext|>")
    if processes.main:
        out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=stop, initial=start, unit="step", disable=not (progress and processes.main))

    for step in range(start, stop + 1):
        evaluating = step == start or step % settings.eval_interval == 0 or step == stop
        val_loss = None
        if evaluating:
            val_loss = evaluate(model, data.val, context, settings.eval_windows, micro_batch, processes, autocast)
            if processes.main:
                sample = sample_text(model, tokenizer, settings.sample_tokens, settings.seed) \
                    if settings.sample_tokens else ""
                bar.write(f"step {step}: validation loss {val_loss:.4f}" + (f"  sample: {sample!r}" if sample else ""))
        if step == stop:
            log.append(LogRow(step, None, val_loss, learning_rate(step, settings), None))
        if evaluating and (step > start or step == stop) and processes.main:
            save_model(model, out, tokenizer_source, eot)
            save_training_state(out, model, optimizer, TrainingState(step, batches.get_state(), asdict(settings)))
            write_log(out / "log.csv", log)  # rows of the steps before this one: a resumed run appends the rest
        if step == stop:
            break
        if before_step is not None:
            before_step(step)
        rate = learning_rate(step, settings)
        for group in optimizer.param_groups:
            group["lr"] = rate
        starts = process_windows(batches, len(data.train), settings, context, micro_batch, processes)
        began = time.perf_counter()
        loss = train_step(trained, optimizer, data.train, starts, context, settings, processes, autocast)
        tokens_per_second = settings.batch_size * context / (time.perf_counter() - began)  # loss is synced
        log.append(LogRow(step, loss, val_loss, rate, tokens_per_second))
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{rate:.2e}", tok_s=f"{tokens_per_second:,.0f}")
        bar.update()
    bar.close()
    barrier(processes)  # the files are complete when every process returns
    return log


def check_run(model: GPT2, data: TokenData, settings: TrainSettings, context: int, micro_batch: int,
              processes: Processes) -> None:
    """InputError for a run that cannot start: shapes that do not divide, windows longer than the data."""
    if context > model.config.n_ctx:
        raise InputError(f"windows of {context} tokens are longer than the model's context of {model.config.n_ctx}")
    if settings.batch_size % (micro_batch * processes.world):
        raise InputError(f"the batch of {settings.batch_size} windows does not split into micro-batches of "
                         f"{micro_batch} on {processes.world} process(es)")
    if data.meta["vocab_size"] > model.config.vocab_size:  # every id < vocab_size: no check at each step
        raise InputError(f"the token files use ids up to {data.meta['vocab_size'] - 1}, beyond the model's "
                         f"vocabulary of {model.config.vocab_size}: tokenise with the model's tokenizer")
    for name, ids in (("training", data.train), ("held-out", data.val)):
        if len(ids) <= context:
            raise InputError(f"the {name} part of the corpus has {len(ids)} tokens, too few for windows of "
                             f"{context} + 1: use a larger corpus, a shorter --context or another --val-fraction")
