"""Training checkpoints: a model folder every tool can load, plus the state `--resume` needs, never pickled.

    model.safetensors    the parameters under the official GPT-2 names (wte.weight, h.0.attn.c_attn.weight, …);
                         a norm variant's learned scalars too (h.0.ln_1.alpha, 0-d)
    config.json          transformers' GPT2Config (model_type "gpt2"); a norm other than layernorm is recorded
                         under "minigpt_geom_norm" (a variant name, or a mapping site -> name)
    vocab.json, merges.txt   the tokenizer, copied
    optimizer.safetensors    AdamW's moments, exp_avg.<name> and exp_avg_sq.<name>, and the batch sampler's
                             RNG state (uint8)
    trainer_state.json   the step reached and the settings of the run

The causal-mask buffers the official file also holds (h.0.attn.bias) are not written: they are not weights,
and both our loader and transformers rebuild them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import GPT2Config
from .errors import CheckpointError
from .files import atomic_write, write_bytes, write_text
from .hub import resolve_file
from .model import GPT2
from .sphere import NormSpec, SphereNorm

NORM_KEY = "minigpt_geom_norm"


# ---- the model folder -----------------------------------------------------------------------------


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


def save_model(model: GPT2, folder: str | os.PathLike, tokenizer_source: str | os.PathLike,
               eot_id: int | None = None) -> Path:
    """Write model.safetensors, config.json and the tokenizer's vocab.json + merges.txt into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().to("cpu", copy=True).contiguous() for name, p in model.named_parameters()}
    atomic_write(folder / "model.safetensors",
                 lambda temporary: save_file(tensors, str(temporary), metadata={"format": "pt"}))
    fields = config_json(model.config, norm_spec(model), eot_id, model.lm_head.tied)
    write_text(folder / "config.json", json.dumps(fields, indent=2) + "\n")
    for name in ("vocab.json", "merges.txt"):
        source = resolve_file(tokenizer_source, name)
        if source.resolve() != (folder / name).resolve():
            write_bytes(folder / name, source.read_bytes())
    return folder


def read_config(folder: str | os.PathLike) -> tuple[GPT2Config, NormSpec]:
    """The shape and the norm variants recorded in a folder's config.json."""
    path = Path(folder) / "config.json"
    try:
        fields = json.loads(path.read_text())
        config = GPT2Config(n_layer=fields["n_layer"], n_head=fields["n_head"], n_embd=fields["n_embd"],
                            n_ctx=fields["n_positions"], vocab_size=fields["vocab_size"],
                            ln_eps=fields.get("layer_norm_epsilon", 1e-5))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path} is not a readable GPT-2 config.json: {error}") from None
    return config, fields.get(NORM_KEY, "layernorm")


def load_model(folder: str | os.PathLike) -> GPT2:
    """The model a training run saved in `folder`: its config, norm variants and every parameter (for --resume)."""
    config, norm = read_config(folder)
    model = GPT2(config, norm=norm)
    model.load_state_dict(read_tensors(Path(folder) / "model.safetensors"), strict=True)
    return model


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file we wrote, on the CPU."""
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from None


# ---- the training state ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingState:
    """Where a run stopped: the step reached, the batch sampler's RNG state, and the run's settings."""

    step: int
    batch_rng: torch.Tensor  # torch.Generator.get_state(): uint8 [n]
    settings: dict


def save_training_state(folder: str | os.PathLike, model: GPT2, optimizer: torch.optim.AdamW,
                        state: TrainingState) -> None:
    """Write AdamW's moments by parameter name and the RNG state (optimizer.safetensors), the step and
    settings (trainer_state.json)."""
    folder = Path(folder)
    tensors = {"rng.batches": state.batch_rng}
    for name, p in model.named_parameters():
        moments = optimizer.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in moments:
                tensors[f"{key}.{name}"] = moments[key].detach().to("cpu", copy=True).contiguous()
    atomic_write(folder / "optimizer.safetensors",
                 lambda temporary: save_file(tensors, str(temporary), metadata={"format": "pt"}))
    write_text(folder / "trainer_state.json",
               json.dumps({"step": state.step, "settings": state.settings}, indent=2) + "\n")


def load_training_state(folder: str | os.PathLike, model: GPT2, optimizer: torch.optim.AdamW) -> TrainingState:
    """Put the saved moments and step back into `optimizer` (built for `model`); returns the saved state."""
    folder = Path(folder)
    try:
        saved = json.loads((folder / "trainer_state.json").read_text())
        step = int(saved["step"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{folder} holds no training state to resume from: {error}") from None
    tensors = read_tensors(folder / "optimizer.safetensors")
    index = {p: i for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])}
    state = {}
    for name, p in model.named_parameters():
        if p not in index or step == 0:
            continue
        try:
            moments = {key: tensors[f"{key}.{name}"].to(p.device) for key in ("exp_avg", "exp_avg_sq")}
        except KeyError:
            raise CheckpointError(f"{folder}/optimizer.safetensors has no moments for {name!r}") from None
        state[index[p]] = {"step": torch.tensor(float(step)), **moments}  # AdamW counts steps per parameter
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return TrainingState(step, tensors["rng.batches"], saved.get("settings", {}))
