"""The state `--resume` needs beside a run's model files, never pickled: AdamW's moments, the batch sampler's
RNG state, the step reached and the run's settings. In the checkpoint folder (io/checkpoint_folder.py):

    optimizer.safetensors    AdamW's moments, exp_avg.<name> and exp_avg_sq.<name> (<name> a parameter's
                             official name), and the batch sampler's RNG state rng.batches (uint8)
    trainer_state.json       the step reached, the settings of the run, and its data: the corpus's files (names,
                             sizes, times), pattern, tokenizer and split (token_files.provenance), compared on
                             --resume

Reading checks every name, dtype, shape and value against the model and optimiser before anything is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import CheckpointError
from ..io.checkpoint import all_finite, read_config_json, read_header
from ..io.checkpoint_folder import CHECKPOINT_LINK, write_checkpoint
from ..io.model_files import save_tensors, write_json
from ..model.gpt2 import GPT2
from ..model.pretrained import write_files


@dataclass(frozen=True)
class TrainingState:
    """Where a run stopped: the step reached, the batch sampler's RNG state, and the run's settings."""

    step: int
    batch_rng: torch.Tensor  # torch.Generator.get_state(): uint8 [n]
    settings: dict
    data: dict | None = None  # token_files.provenance of the data it trains on; None in a run saved before it


def write_training_state(folder: Path, model: GPT2, optimizer: torch.optim.AdamW, state: TrainingState) -> None:
    """AdamW's moments by parameter name and the RNG state (optimizer.safetensors), the step and settings
    (trainer_state.json), into the checkpoint folder being written."""
    tensors = {"rng.batches": state.batch_rng}
    for name, p in model.named_parameters():
        moments = optimizer.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in moments:
                tensors[f"{key}.{name}"] = moments[key].detach().to("cpu", copy=True).contiguous()
    save_tensors(tensors, folder / "optimizer.safetensors")
    write_json(folder / "trainer_state.json", {"step": state.step, "settings": state.settings, "data": state.data})


def save_checkpoint(folder: str | os.PathLike, model: GPT2, optimizer: torch.optim.AdamW, state: TrainingState,
                    tokenizer_source: str | os.PathLike, eot_id: int | None) -> Path:
    """A run's checkpoint, one unit: the model files, then the optimiser state and the step."""
    def write(unit: Path) -> None:
        write_files(model, unit, tokenizer_source, eot_id)
        write_training_state(unit, model, optimizer, state)

    return write_checkpoint(Path(folder), f"step-{state.step:06d}", write)


def read_saved_state(folder: str | os.PathLike) -> tuple[int, dict, dict | None]:
    """(step, settings, data) of the run in `folder`, from trainer_state.json (nothing else is read)."""
    path = Path(folder) / CHECKPOINT_LINK / "trainer_state.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} holds no run to resume (no {CHECKPOINT_LINK}/trainer_state.json): "
                              f"train without --resume")
    values = read_config_json(path).values  # bounded, UTF-8, a JSON object
    step, settings, data = values.get("step"), values.get("settings"), values.get("data")
    if type(step) is not int or step < 0 or not isinstance(settings, dict) or not isinstance(data, (dict, type(None))):
        raise CheckpointError(f"{path} must hold a step ≥ 0, the run's settings and its data, got step {step!r}")
    return step, settings, data


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
    step, settings, data = read_saved_state(folder)
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
    return TrainingState(step, tensors["rng.batches"], settings, data)
