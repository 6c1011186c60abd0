"""Checkpoints as one unit: a model folder every tool can load, plus the state `--resume` needs, never pickled.

A checkpoint is a folder written whole, then made visible by one atomic step (Hugging Face Trainer and
torch.distributed.checkpoint do the same):

    DIR/.step-000200.tmp/    written file by file: config.json before model.safetensors, then the rest
    DIR/step-000200/         … renamed once complete
    DIR/checkpoint           a symbolic link, replaced atomically by one pointing at step-000200/
    DIR/model.safetensors    links through checkpoint/ (config.json, vocab.json, merges.txt likewise), so
                             DIR itself loads as a GPT-2 folder, always one checkpoint's files together

The previous checkpoint folder is removed only after the link points at the new one: a kill at any moment
leaves DIR on the old checkpoint or the new, never a mix. What a checkpoint folder holds:

    config.json          transformers' GPT2Config (model_type "gpt2"); a norm other than layernorm is recorded
                         under "minigpt_geom_norm" (a variant name, or a mapping site -> name)
    vocab.json, merges.txt   the tokenizer, copied
    model.safetensors    the parameters under the official GPT-2 names (wte.weight, h.0.attn.c_attn.weight, …);
                         a norm variant's learned scalars too (h.0.ln_1.alpha, 0-d)
    optimizer.safetensors    (a run's) AdamW's moments, exp_avg.<name> and exp_avg_sq.<name>, and the batch
                             sampler's RNG state rng.batches (uint8)
    trainer_state.json   (a run's) the step reached and the settings of the run

Reading goes through checkpoint.py's checks (names, shapes, dtypes, finite values) before anything is built.
The causal-mask buffers the official file also holds (h.0.attn.bias) are not written: they are not weights.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .checkpoint import NORM_KEY, all_finite, read_config_json, read_header
from ..config import GPT2Config
from ..errors import CheckpointError, InputError, OutputError
from .files import umask
from .hub import resolve_file
from ..model.gpt2 import GPT2
from ..model.norm_site import SphereNorm
from ..model.variants import NormSpec

CHECKPOINT_LINK = "checkpoint"  # DIR/checkpoint -> the current checkpoint folder
MODEL_FILES = ("config.json", "vocab.json", "merges.txt", "model.safetensors")  # linked from DIR, in writing order
CHECKPOINT_FOLDER = re.compile(r"\.?(step-[0-9]+|model)(\.[0-9]+)?(\.tmp)?")  # our folders, current or abandoned
LOCK_FILE = "run.lock"


# ---- the model files -------------------------------------------------------------------------------


def norm_spec(model: GPT2) -> NormSpec:
    """The model's norm variants: one name when every site has the same, else a mapping site -> name."""
    sites = {name: module.variant.name for name, module in model.named_modules() if isinstance(module, SphereNorm)}
    names = set(sites.values())
    return names.pop() if len(names) == 1 else sites


def config_json(config: GPT2Config, norm: NormSpec, eot_id: int | None, tied: bool = True) -> dict:
    """transformers' GPT2Config as JSON for our shape (no dropout: we train without it)."""
    fields = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_embd": config.n_embd,
        "n_positions": config.n_ctx,
        "n_ctx": config.n_ctx,
        "vocab_size": config.vocab_size,
        "layer_norm_epsilon": config.ln_eps,
        "activation_function": "gelu_new",
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": tied,  # False after a fold: lm_head.weight and lm_head.bias are in the file
    }
    if eot_id is not None:
        fields.update(bos_token_id=eot_id, eos_token_id=eot_id)
    if norm != "layernorm":
        fields[NORM_KEY] = norm
    return fields


def write_json(path: Path, value: dict) -> None:
    """Indented JSON and a newline."""
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def write_model_files(model: GPT2, folder: Path, tokenizer_source: str | os.PathLike, eot_id: int | None) -> None:
    """config.json, the tokenizer's vocab.json + merges.txt, then model.safetensors, into `folder`."""
    write_json(folder / "config.json", config_json(model.config, norm_spec(model), eot_id, model.lm_head.tied))
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(resolve_file(tokenizer_source, name), folder / name)
    tensors = {name: p.detach().to("cpu", copy=True).contiguous() for name, p in model.named_parameters()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def save_model(model: GPT2, folder: str | os.PathLike, tokenizer_source: str | os.PathLike,
               eot_id: int | None = None) -> Path:
    """Write the model and its tokenizer into `folder` as one checkpoint (see write_checkpoint)."""
    write_checkpoint(Path(folder), "model", lambda unit: write_model_files(model, unit, tokenizer_source, eot_id))
    return Path(folder)


# ---- one checkpoint, one unit -------------------------------------------------------------------------


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (a checkpoint is finished), then act as they would have.

    Python runs signal handlers in the main thread only, so a handler that notes the signal holds it whatever
    thread the kernel delivered it to (a signal mask would hold it for one thread alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {number: signal.signal(number, lambda number, frame: received.append(number))
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        if received:
            signal.raise_signal(received[0])


def replace_link(link: Path, target: str) -> None:
    """Make `link` a symbolic link to `target` in one atomic step (a new link renamed over the old path)."""
    temporary = link.with_name(f".{link.name}.new")
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, link)


def current_checkpoint(folder: Path) -> Path | None:
    """The checkpoint folder DIR/checkpoint points at, if any."""
    link = folder / CHECKPOINT_LINK
    return link.resolve() if link.is_symlink() and link.is_dir() else None


def write_checkpoint(folder: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Write one checkpoint: `write(unit)` fills a temporary folder, which is renamed to DIR/name (name.1, … if
    taken) and made current by replacing the DIR/checkpoint link; older checkpoint folders are then removed.

    SIGINT and SIGTERM wait until the checkpoint is complete; any error leaves DIR as it was. Returns the
    new checkpoint folder."""
    unit = folder / f".{name}.tmp"
    try:
        with signals_held():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(unit, ignore_errors=True)  # left by a run killed while writing
            unit.mkdir(mode=0o777 & ~umask())
            write(unit)
            final = next(folder / f"{name}{suffix}" for suffix in ("", *(f".{i}" for i in range(1, 100)))
                         if not os.path.lexists(folder / f"{name}{suffix}"))
            os.rename(unit, final)
            replace_link(folder / CHECKPOINT_LINK, final.name)  # the moment the new checkpoint becomes DIR's
            for file in MODEL_FILES:
                link = folder / file
                if not (link.is_symlink() and os.readlink(link) == f"{CHECKPOINT_LINK}/{file}"):
                    replace_link(link, f"{CHECKPOINT_LINK}/{file}")
            remove_stale_checkpoints(folder)
    except (OSError, SafetensorError) as error:  # a full disk, a read-only folder: the previous one untouched
        shutil.rmtree(unit, ignore_errors=True)
        reason = getattr(error, "strerror", None) or " ".join(str(error).split())
        raise OutputError(f"cannot write a checkpoint into {folder}: {reason}") from None
    except BaseException:
        shutil.rmtree(unit, ignore_errors=True)
        raise
    return final


def remove_stale_checkpoints(folder: Path) -> None:
    """Remove every checkpoint folder of ours in `folder` but the current one (old, abandoned or half written)."""
    current = current_checkpoint(folder)
    for entry in folder.iterdir():
        if CHECKPOINT_FOLDER.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink() \
                and entry.resolve() != current:
            shutil.rmtree(entry, ignore_errors=True)


# ---- the run folder -----------------------------------------------------------------------------------


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold DIR/run.lock (flock, released by the kernel however the process ends); OutputError if another
    process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise OutputError(f"cannot create {folder / LOCK_FILE}: {error.strerror or error}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another process is running in {folder} (it holds {folder / LOCK_FILE}): "
                              f"wait for it, or give another -o") from None
        yield
    finally:
        os.close(fd)


def holds_checkpoint(folder: Path) -> bool:
    """True when `folder` holds a checkpoint (ours, or any model.safetensors)."""
    return os.path.lexists(folder / CHECKPOINT_LINK) or os.path.lexists(folder / "model.safetensors")


def check_new_output(folder: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """InputError when `folder` holds a checkpoint that would be replaced without resume or overwrite."""
    if holds_checkpoint(folder) and not (resume or overwrite):
        what = "a run" if (folder / CHECKPOINT_LINK / "trainer_state.json").is_file() else "a model"
        raise InputError(f"{folder} already holds {what}: resume it, overwrite it, or choose another folder")


# ---- the training state ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingState:
    """Where a run stopped: the step reached, the batch sampler's RNG state, and the run's settings."""

    step: int
    batch_rng: torch.Tensor  # torch.Generator.get_state(): uint8 [n]
    settings: dict


def write_training_state(folder: Path, model: GPT2, optimizer: torch.optim.AdamW, state: TrainingState) -> None:
    """AdamW's moments by parameter name and the RNG state (optimizer.safetensors), the step and settings
    (trainer_state.json), into the checkpoint folder being written."""
    tensors = {"rng.batches": state.batch_rng}
    for name, p in model.named_parameters():
        moments = optimizer.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in moments:
                tensors[f"{key}.{name}"] = moments[key].detach().to("cpu", copy=True).contiguous()
    save_file(tensors, str(folder / "optimizer.safetensors"), metadata={"format": "pt"})
    write_json(folder / "trainer_state.json", {"step": state.step, "settings": state.settings})


def save_checkpoint(folder: str | os.PathLike, model: GPT2, optimizer: torch.optim.AdamW, state: TrainingState,
                    tokenizer_source: str | os.PathLike, eot_id: int | None) -> Path:
    """A run's checkpoint, one unit: the model files, then the optimiser state and the step."""
    def write(unit: Path) -> None:
        write_model_files(model, unit, tokenizer_source, eot_id)
        write_training_state(unit, model, optimizer, state)

    return write_checkpoint(Path(folder), f"step-{state.step:06d}", write)


def read_saved_state(folder: str | os.PathLike) -> tuple[int, dict]:
    """(step, settings) of the run in `folder`, from trainer_state.json (nothing else is read)."""
    path = Path(folder) / CHECKPOINT_LINK / "trainer_state.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} holds no run to resume (no {CHECKPOINT_LINK}/trainer_state.json): "
                              f"train without --resume")
    values = read_config_json(path).values  # bounded, UTF-8, a JSON object
    step, settings = values.get("step"), values.get("settings")
    if type(step) is not int or step < 0 or not isinstance(settings, dict):
        raise CheckpointError(f"{path} must hold a step ≥ 0 and the run's settings, got step {step!r}")
    return step, settings


def expected_state(model: GPT2, optimizer: torch.optim.AdamW, step: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every tensor optimizer.safetensors must hold for `model` at `step`: name -> (dtype, shape)."""
    rng = torch.Generator().get_state()
    expected = {"rng.batches": ("U8", tuple(rng.shape))}
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if step > 0:  # AdamW has moments from the first step on
        for name, p in model.named_parameters():
            if id(p) in trained:
                expected.update({f"{key}.{name}": ("F32", tuple(p.shape)) for key in ("exp_avg", "exp_avg_sq")})
    return expected


def load_training_state(folder: str | os.PathLike, model: GPT2, optimizer: torch.optim.AdamW) -> TrainingState:
    """Put the saved moments and step back into `optimizer` (built for `model`) after checking every name,
    dtype, shape and value of optimizer.safetensors against them; returns the saved state."""
    step, settings = read_saved_state(folder)
    path = Path(folder) / CHECKPOINT_LINK / "optimizer.safetensors"
    expected = expected_state(model, optimizer, step)
    header = read_header(path)  # the header alone: nothing is allocated before the names and shapes fit
    found = {name: (info.dtype, info.shape) for name, info in header.items()}
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the model at step {step}: missing {missing[:4]}, "
                              f"unexpected {unexpected[:4]}")
    for name, (dtype, shape) in expected.items():
        if found[name] != (dtype, shape):
            raise CheckpointError(f"{path}: {name} is {found[name][0]} {list(found[name][1])}, "
                                  f"expected {dtype} {list(shape)}")
    tensors = load_file(str(path))
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not all_finite(tensor):
            raise CheckpointError(f"{path}: {name} holds NaN or infinite values")
    try:
        torch.Generator().set_state(tensors["rng.batches"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: rng.batches is not a random generator's state ({error})") from None
    index = {p: i for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])}
    state = {index[p]: {"step": torch.tensor(float(step)),  # AdamW counts steps per parameter
                        **{key: tensors[f"{key}.{name}"].to(p.device) for key in ("exp_avg", "exp_avg_sq")}}
             for name, p in model.named_parameters() if p in index and step > 0}
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return TrainingState(step, tensors["rng.batches"], settings)
