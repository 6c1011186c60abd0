"""Training GPT-2 with any norm variant, on one process or many (nanoGPT's train.py is the model to follow).

    for step in 0 … steps−1:
        lr    = linear warm-up, then cosine decay to min_lr                      (learning_rate)
        g     = ∇ mean cross-entropy over the global batch of windows, summed micro-batch by micro-batch
        stop  if the loss or ‖g‖ is not finite (the last checkpoint, all finite, stays)
        g     = g · min(1, clip / ‖g‖)                                            (gradient clipping)
        θ     = AdamW(θ, g, lr), weight decay on the matrices only
        every log_interval steps: a row of log.csv; every eval_interval: validation loss (not finite: stop
        before saving, the last checkpoint stays), a sample, a checkpoint

Under `torchrun --nproc_per_node N` every process draws the same global batch of windows (one seeded
generator) and takes its own slice of it; DistributedDataParallel averages the gradients, so N processes
follow the path of a single one with the same global batch. The run owns its folder: run.lock is held
from start to end, and a checkpoint is written as one unit (io/checkpoint_folder.py).
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, astuple, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..text.token_files import (TokenData, cache_folder, check_same_data, check_tokenizer, load_tokens, prepare,
                                provenance, windows)
from .distributed import ALONE, Processes, agree, barrier, start_processes, total
from ..errors import CheckpointError, InputError, MiniGPTGeomError, Note
from ..io.checkpoint_folder import LOCK_FILE, current_checkpoint, remove_stale_checkpoints
from ..io.files import folder_lock, write_text
from ..io.owned import check_owned, record
from ..model.pretrained import norm_spec
from .optimizer_state import TrainingState, load_training_state, save_checkpoint
from .run_folder import check_new_output
from ..text.generation import Sampling, generate
from ..memory import check_fits
from .collapse import (CollapseWarning, Health, dyt_sites, health, health_request, plateau_note, saturation_note,
                       unigram_entropy)
from .loss import Workspace, chunked_cross_entropy
from .memory import training_bytes, window_starts_bytes
from ..model.dropout import in_mode
from ..model.gpt2 import GPT2
from ..model.trace import Trace, TraceRequest
from ..text.tokenizer import ENDOFTEXT, Tokenizer
from .settings import SettingError, TrainSettings, learning_rate, schedule_warning, settings_from_saved


class ScheduleWarning(UserWarning):
    """The run is too short for its schedule: the learning rate never reaches its peak."""


class TrainingStopped(MiniGPTGeomError):
    """The loss or the gradient norm stopped being finite: the run ended before the update that would spread it."""


@dataclass(frozen=True)
class LogRow:
    """One line of log.csv."""

    step: int
    train_loss: float | None  # mean cross-entropy (nats) of the step's global batch, before the update
    val_loss: float | None  # mean cross-entropy on the validation windows, at evaluations
    learning_rate: float
    tokens_per_second: float | None
    grad_norm: float | None  # ‖g‖ before clipping
    residual_norm: float | None = None  # mean ‖x_L‖ on the first evaluation micro-batch, at evaluations
    dyt_saturation: float | None = None  # the most saturated DyT site's share of |tanh(αx)| > 0.99 (collapse.py)


# ---- the optimiser and its schedule -----------------------------------------------------------------


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
    for module in model.norm_sites().values():
        if not module.variant.affine:
            module.weight.requires_grad_(False)
            module.bias.requires_grad_(False)


# ---- batches and losses -----------------------------------------------------------------------------


class NextTokenLoss(torch.nn.Module):
    """(ids x [B, T], next ids y [B, T]) -> their cross-entropy, nats (float32): `model.final_points` up to
    x̂ = LN_f(x_L) [B, T, d] (compiled with `compile`), then the unembedding and the loss a chunk of positions at
    a time (loss.py): the [B, T, vocab] logits are never held. The token files' ids are checked once (check_run),
    not at every step, where the check's idx.min()/max() would make a GPU wait for the CPU and break
    torch.compile's graph."""

    def __init__(self, model: GPT2, compile: bool = False) -> None:
        super().__init__()
        self.model = model
        self.points = torch.compile(model.final_points) if compile else model.final_points
        self.workspace = Workspace()  # the chunk's logits buffer, kept from step to step

    def forward(self, x: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        """The mean (or summed) −log p(y | x) over every position."""
        x_hat, _ = self.points(x)
        return self.cross_entropy(x_hat, y, reduction)

    def traced(self, x: Tensor, y: Tensor, request: TraceRequest) -> tuple[Tensor, Trace]:
        """The summed −log p(y | x) and the Trace `request` asks for, of one pass of the model (not compiled)."""
        plan = self.model.check_edits(None, *x.shape, 0, request)  # what the trace captures
        x_hat, trace = self.model.final_points(x, request, None, plan)
        return self.cross_entropy(x_hat, y, "sum"), trace

    def cross_entropy(self, x_hat: Tensor, y: Tensor, reduction: str) -> Tensor:
        """The loss of the final points x̂ [B, T, d] against the next ids y [B, T], a chunk of positions at a time."""
        return chunked_cross_entropy(x_hat.flatten(0, 1), self.model.unembedding_rows(), self.model.lm_head.bias,
                                     y.flatten(), reduction, self.workspace)


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
    processes = processes or ALONE
    backend = tokenising.pop("backend", "auto")  # the ids do not depend on it: not part of the cache's key
    folder = cache_folder(corpus, tokenizer_source, cache_dir=cache_dir, exclude=exclude, **tokenising)
    if processes.main and not (folder / "meta.json").is_file():
        prepare(corpus, tokenizer_source, folder, backend=backend, exclude=exclude, progress=progress, **tokenising)
    barrier(processes)
    return load_tokens(folder)


# ---- one step, one evaluation -------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """What one optimiser step measured: the global batch's mean loss and the gradient norm before clipping."""

    loss: float
    grad_norm: float


def train_step(trained: torch.nn.Module, optimizer: torch.optim.AdamW, ids: np.ndarray, starts: Tensor,
               context: int, settings: TrainSettings, processes: Processes, autocast) -> StepResult:
    """One optimiser step over this process's windows [accumulation, micro_batch].

    Each micro-batch adds ∇(loss / accumulation) to the gradients, so after the last one they hold ∇ of
    the mean over this process's windows; DDP then averages them over the processes (on the last backward
    only: no_sync skips the exchange before). A non-finite loss or ‖g‖ raises TrainingStopped before the
    update, in every process alike (both are global)."""
    accumulation = starts.shape[0]
    loss_sum = torch.zeros((), device=processes.device)
    for k, micro_starts in enumerate(starts):
        x, y = (t.to(processes.device) for t in windows(ids, micro_starts, context))
        exchange = processes.world == 1 or k == accumulation - 1
        with nullcontext() if exchange else trained.no_sync():
            with autocast:
                loss = trained(x, y)
            (loss / accumulation).backward()
        loss_sum += loss.detach()
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    loss, grad_norm = (total(loss_sum / accumulation, processes) / processes.world).item(), grad_norm.item()
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise TrainingStopped(f"the loss ({loss:.4g}) or the gradient norm ({grad_norm:.4g}) is not finite")
    if settings.grad_clip > 0:
        torch.nn.utils.clip_grads_with_norm_(params, settings.grad_clip, torch.tensor(grad_norm))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss, grad_norm)


@torch.no_grad()
def evaluate(loss: NextTokenLoss, ids: np.ndarray, context: int, n_windows: int, micro_batch: int,
             processes: Processes, autocast) -> tuple[float, Health | None]:
    """(Mean cross-entropy over n_windows windows evenly spaced over ids, shared out among the processes; in the
    main process the Health its first micro-batch's pass shows, traced: collapse.py), in eval mode (no dropout)."""
    starts = torch.linspace(0, len(ids) - context - 1, n_windows).long()[processes.rank::processes.world]
    sums = torch.zeros(2, dtype=torch.float64, device=processes.device)  # Σ loss, number of predictions
    measured = None
    with in_mode(loss.model, training=False):
        for first in range(0, len(starts), micro_batch):  # slices made one at a time: split() would hold a tensor
            chunk = starts[first:first + micro_batch]        # object (~200 bytes) per micro-batch all at once
            x, y = (t.to(processes.device) for t in windows(ids, chunk, context))
            with autocast:
                if processes.main and measured is None:
                    loss_sum, trace = loss.traced(x, y, health_request(loss.model))
                    sums[0] += loss_sum
                    measured = health(loss.model, trace)
                else:
                    sums[0] += loss(x, y, reduction="sum")
            sums[1] += y.numel()
    loss_sum, count = total(sums, processes).tolist()
    return loss_sum / count, measured


def sample_text(model: GPT2, tokenizer: Tokenizer, n_tokens: int, seed: int) -> str:
    """A sample of n_tokens after <|endoftext|> (after id 0 without it), the same seed at every evaluation."""
    eot = tokenizer.special_tokens.get(ENDOFTEXT)
    prompt = torch.tensor([[0 if eot is None else eot]], device=model.wte.weight.device)
    n_tokens = min(n_tokens, model.config.n_ctx - 1)
    ids = generate(model, prompt, n_tokens, Sampling(temperature=1.0, seed=seed), eos_id=eot)
    return tokenizer.decode(ids[0, 1:].tolist())


# ---- the log ---------------------------------------------------------------------------------------------

LOG_FIELDS = [f.name for f in fields(LogRow)]
EARLIER_LOG_FIELDS = LOG_FIELDS[:6]  # a log.csv written before residual_norm and dyt_saturation: read, they are empty


def log_cells(row: LogRow) -> list[str]:
    """A row's cells: six significant digits (a learning rate of 6e-06, not 5.999999999999999e-06), empty
    where nothing was measured."""
    return [str(v) if isinstance(v, int) else "" if v is None else f"{v:.6g}" for v in astuple(row)]


def start_csv(path: Path, header: list[str], rows: Iterable[list]) -> None:
    """A CSV of the run anew (log.csv, sigma.csv): the header and `rows` (those a resumed run keeps), replacing
    the old file in one step, so that a kill leaves its rows or the new file, never fewer; only a file of ours
    (io/owned.py) is replaced."""
    check_owned(path.parent, (path.name,))
    record(path.parent, added=(path.name,))
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, text.getvalue())


def start_log(path: Path, rows: list[LogRow]) -> None:
    """log.csv anew: the header and `rows` (those a resumed run keeps)."""
    start_csv(path, LOG_FIELDS, (log_cells(row) for row in rows))


def append_log(path: Path, row: LogRow) -> None:
    """One more row of log.csv, flushed at once so the run can be followed (`tail -f`)."""
    with path.open("a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow(log_cells(row))


def read_log(path: Path) -> list[LogRow]:
    """The rows of a log.csv written by append_log (none if it does not exist; one of an earlier version, with
    EARLIER_LOG_FIELDS, too); CheckpointError naming the line of one that is damaged (it is left as it is, for the
    user to repair or move away)."""
    if not path.is_file():
        return []
    rows, line = [], 1
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames
            if header not in (LOG_FIELDS, EARLIER_LOG_FIELDS):
                raise ValueError(f"its header is not {','.join(LOG_FIELDS)}")
            for line, r in enumerate(reader, start=2):
                if None in r or None in r.values():  # more cells than the header, or fewer
                    raise ValueError(f"it has {len(header)} columns, this row another number")
                rows.append(LogRow(int(r["step"]), *(float(r[k]) if r[k] else None for k in header[1:])))
    except (ValueError, csv.Error) as error:  # UnicodeDecodeError is a ValueError
        raise CheckpointError(f"{path} is damaged at line {line} ({' '.join(str(error).split())[:120]}): repair "
                              f"it, or move it away to resume with a new log") from None
    return rows


# ---- the run -----------------------------------------------------------------------------------------


def train(model: GPT2, data: TokenData, tokenizer_source: str | os.PathLike, out: str | os.PathLike,
          settings: TrainSettings = TrainSettings(), *, device: str | torch.device = "cpu", resume: bool = False,
          overwrite: bool = False, progress: bool = True,
          before_step: Callable[[int], None] | None = None) -> list[LogRow]:
    """Train `model` in place on `data`, writing checkpoints, log.csv and the tokenizer into `out`.

    `before_step(step)`, if given, runs before each optimiser step (remove_ln switches layer norms there).
    A folder that holds a run is refused unless `resume` (continue it: `model` must hold its weights, as
    GPT2.from_pretrained(out) gives) or `overwrite`. Returns the log (every step's row). Under torchrun, every
    process calls it, with the same settings (checked). The model trains in training mode with the settings'
    dropout (its config.dropout from then on, saved in config.json) and is left in its own mode after; with
    dropout, torch's global generator is seeded before each step (dropout_seed), so that the run is repeatable
    and a resumed one draws the masks the whole run would have (N processes draw other masks than one)."""
    processes = start_processes(device)
    model.config = replace(model.config, dropout=settings.dropout)
    out = Path(out)
    check_tokenizer(data, tokenizer_source)
    context = settings.context or model.config.n_ctx
    micro_batch = settings.micro_batch or max(settings.batch_size // processes.world, 1)
    agree({**asdict(settings), "model": asdict(model.config), "norm": norm_spec(model), "resume": resume,
           "data": [len(data.train), len(data.val)]}, processes)
    check_run(model, data, settings, context, micro_batch, processes)
    if processes.main and (warning := schedule_warning(settings)):
        warnings.warn(warning, ScheduleWarning, stacklevel=2)
    lock = folder_lock(out, LOCK_FILE) if processes.main else nullcontext()
    with lock, in_mode(model, training=True):  # dropout on, but at evaluations and samples
        return run_steps(model, data, tokenizer_source, out, settings, processes, context, micro_batch,
                         resume=resume, overwrite=overwrite, progress=progress, before_step=before_step)


def run_steps(model: GPT2, data: TokenData, tokenizer_source: str | os.PathLike, out: Path, settings: TrainSettings,
              processes: Processes, context: int, micro_batch: int, *, resume: bool, overwrite: bool, progress: bool,
              before_step: Callable[[int], None] | None) -> list[LogRow]:
    """The loop of `train`, inside the folder's lock."""
    check_new_output(out, resume=resume, overwrite=overwrite)
    stop = settings.steps if settings.stop_at is None else min(settings.stop_at, settings.steps)
    model.to(processes.device)
    freeze_unused(model)
    optimizer = make_optimizer(model, settings)
    batches = torch.Generator().manual_seed(settings.seed)  # the one source of randomness of the run
    start, log = 0, []
    if resume:
        state = load_training_state(out, model, optimizer)
        settings_from_saved(state.settings, asdict(settings))  # the saved run's path, or a SettingError naming why not
        if state.data is None:
            warnings.warn(f"the run in {out} was saved without a record of its data: the corpus is not checked",
                          Note, stacklevel=3)
        else:
            check_same_data(state.data, data)  # the same files, pattern, tokenizer and split, or an InputError
        start, log = state.step, [row for row in read_log(out / "log.csv") if row.step < state.step]
        batches.set_state(state.batch_rng)
        if processes.main:  # a kill between the last link switch and its cleanup left the previous checkpoint
            remove_stale_checkpoints(out)
    if stop < start:
        raise InputError(f"the run in {out} is at step {start}, past the requested stop at step {stop}")

    dtype = settings.dtype if settings.dtype != "auto" else "bfloat16" if processes.device.type == "cuda" else "float32"
    autocast = torch.autocast(processes.device.type, torch.bfloat16) if dtype == "bfloat16" else nullcontext()
    loss = NextTokenLoss(model, settings.compile)
    trained = loss
    if processes.world > 1:
        ids = [processes.device.index] if processes.device.type == "cuda" else None
        trained = torch.nn.parallel.DistributedDataParallel(loss, device_ids=ids)
    tokenizer = Tokenizer.from_pretrained(tokenizer_source)
    eot = tokenizer.special_tokens.get(ENDOFTEXT)
    log_path = out / "log.csv"
    if processes.main:
        start_log(log_path, [row for row in log if logged(row, settings)])
    bar = tqdm(total=stop, initial=start, unit="step", disable=not (progress and processes.main))
    saturation_warned = False

    for step in range(start, stop + 1):
        evaluating = step == start or step % settings.eval_interval == 0 or step == stop
        val_loss, measured = None, None
        if evaluating:
            val_loss, measured = evaluate(loss, data.val, context, settings.eval_windows, micro_batch, processes,
                                          autocast)
            if not math.isfinite(val_loss):  # the same sum in every process: all stop, before any file is written
                raise stopped(out, step, f"the validation loss ({val_loss:.4g}) is not finite", "before saving")
            if processes.main:
                sample = sample_text(model, tokenizer, settings.sample_tokens, settings.seed) \
                    if settings.sample_tokens else ""
                bar.write(f"step {step}: validation loss {val_loss:.4f}" + (f"  sample: {sample!r}" if sample else ""))
                if not saturation_warned and (note := saturation_note(step, measured)):
                    warnings.warn(note, CollapseWarning, stacklevel=3)  # once: it names every site already
                    saturation_warned = True
        if evaluating and (step > start or (step == stop and not resume)) and processes.main:
            state = TrainingState(step, batches.get_state(), asdict(settings), provenance(data.meta))
            save_checkpoint(out, model, optimizer, state, tokenizer_source, eot)
        if step == stop:
            row = LogRow(step, None, val_loss, learning_rate(step, settings), None, None, *health_cells(measured))
            log.append(row)
            if processes.main:
                append_log(log_path, row)
                losses = [row.val_loss for row in log if row.val_loss is not None]
                if step > settings.warmup_steps and (note := plateau_note(losses, unigram_entropy(data.val),
                                                                          bool(dyt_sites(model)))):
                    warnings.warn(note, CollapseWarning, stacklevel=3)
            break
        if before_step is not None:
            before_step(step)
        rate = learning_rate(step, settings)
        for group in optimizer.param_groups:
            group["lr"] = rate
        starts = process_windows(batches, len(data.train), settings, context, micro_batch, processes)
        if settings.dropout:  # the masks come from torch's own generator: seeded by (seed, step, process) alone,
            torch.manual_seed(dropout_seed(settings.seed, step, processes.rank))  # a resumed run draws the same
        began = time.perf_counter()
        try:
            result = train_step(trained, optimizer, data.train, starts, context, settings, processes, autocast)
        except TrainingStopped as error:
            raise stopped(out, step, str(error), "before this update") from None
        tokens_per_second = settings.batch_size * context / (time.perf_counter() - began)  # loss is synced
        row = LogRow(step, result.loss, val_loss, rate, tokens_per_second, result.grad_norm, *health_cells(measured))
        log.append(row)
        if processes.main and logged(row, settings):
            append_log(log_path, row)
        bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{rate:.2e}", tok_s=f"{tokens_per_second:,.0f}")
        bar.update()
    bar.close()
    barrier(processes)  # the files are complete when every process returns
    return log


def dropout_seed(seed: int, step: int, rank: int) -> int:
    """The seed of one step's dropout masks in one process: a hash of the three (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0])


def health_cells(measured: Health | None) -> tuple[float | None, float | None]:
    """(mean ‖x_L‖, the most saturated DyT site's saturation) for log.csv; None where not measured."""
    return (None, None) if measured is None else (measured.residual_norm, measured.most_saturated)


def stopped(out: Path, step: int, problem: str, when: str) -> TrainingStopped:
    """The error that ends a run whose numbers stopped being finite, naming the checkpoint that stays."""
    saved = current_checkpoint(out)
    kept = f"{out} keeps its last checkpoint, {saved.name}" if saved else "no checkpoint was saved"
    return TrainingStopped(f"step {step}: {problem}; the run stopped {when} ({kept}): try a lower learning rate")


def logged(row: LogRow, settings: TrainSettings) -> bool:
    """Rows of log.csv: every log_interval-th step, and every evaluation."""
    return row.step % settings.log_interval == 0 or row.val_loss is not None


def check_run(model: GPT2, data: TokenData, settings: TrainSettings, context: int, micro_batch: int,
              processes: Processes) -> None:
    """InputError for a run that cannot start: shapes that do not divide, windows longer than the data, a step
    that cannot fit in memory."""
    if context > model.config.n_ctx:
        raise SettingError("context", f"({context} tokens) is longer than the model's context of "
                           f"{model.config.n_ctx}")
    if settings.batch_size % (micro_batch * processes.world):
        raise SettingError("batch_size", f"({settings.batch_size} windows) does not split into micro-batches of "
                           f"{micro_batch} on {processes.world} process(es)")
    check_fits(f"a training step of micro-batch {micro_batch} × {context} tokens",
               training_bytes(model.config, micro_batch, context), processes.device)
    for count, what in ((settings.batch_size, "a batch"), (settings.eval_windows, "an evaluation")):  # drawn at once
        check_fits(f"{what} of {count:,} windows", window_starts_bytes(count), torch.device("cpu"))
    if data.meta["vocab_size"] > model.config.vocab_size:  # every id < vocab_size: no check at each step
        raise InputError(f"the token files use ids up to {data.meta['vocab_size'] - 1}, beyond the model's "
                         f"vocabulary of {model.config.vocab_size}: tokenise with the model's tokenizer")
    for name, ids in (("training", data.train), ("held-out", data.val)):
        if len(ids) <= context:
            raise InputError(f"the {name} part of the corpus has {len(ids)} tokens, too few for windows of "
                             f"{context} + 1: use a larger corpus, a shorter context or another validation fraction")

