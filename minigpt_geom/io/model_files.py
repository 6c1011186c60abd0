"""A model folder any GPT-2 tool can load, written from tensors, a config and the norm variants' names (never
the model class: `GPT2.save_pretrained` hands them over). What it holds:

    config.json          transformers' GPT2Config fields; model_type "gpt2" when transformers computes the same
                         model (layer norm, tied unembedding), else "minigpt_geom" (checkpoint.MODEL_TYPE), which
                         transformers does not take for GPT-2; a norm other than layernorm is recorded under
                         "minigpt_geom_norm" (a variant name, or a mapping site -> name)
    vocab.json, merges.txt   the tokenizer, copied
    model.safetensors    the parameters under the official GPT-2 names (wte.weight, h.0.attn.c_attn.weight, …);
                         a norm variant's learned scalars too (h.0.ln_1.alpha, 0-d); lm_head.weight and
                         lm_head.bias when the unembedding is untied (after a fold)

The causal-mask buffers the official file also holds (h.0.attn.bias) are not written: they are not weights.
Reading goes through checkpoint.py's checks (names, shapes, dtypes, finite values) before anything is built.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Mapping, Union

from safetensors.torch import save_file
from torch import Tensor

from ..config import GPT2Config
from .checkpoint import ARCHITECTURE, MODEL_TYPE, NORM_KEY, runs_in_transformers
from .checkpoint_folder import write_checkpoint
from .files import umask
from .hub import resolve_file

NormNames = Union[str, Mapping[str, str]]  # one variant name for every site, or site -> name


def config_json(config: GPT2Config, norm: NormNames, eot_id: int | None, tied: bool = True) -> dict:
    """transformers' GPT2Config as JSON for our shape, under GPT-2's model type only when transformers' GPT-2
    computes this model (checkpoint.runs_in_transformers); the one dropout p under each of transformers' three
    names, so that its model.train() drops what ours does (model/dropout.py)."""
    gpt2 = runs_in_transformers(norm, tied)
    fields = {
        "model_type": "gpt2" if gpt2 else MODEL_TYPE,
        "architectures": ["GPT2LMHeadModel" if gpt2 else ARCHITECTURE],
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_embd": config.n_embd,
        "n_positions": config.n_ctx,
        "n_ctx": config.n_ctx,
        "vocab_size": config.vocab_size,
        "layer_norm_epsilon": config.ln_eps,
        "activation_function": "gelu_new",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "tie_word_embeddings": tied,  # False after a fold: lm_head.weight and lm_head.bias are in the file
    }
    if eot_id is not None:
        fields.update(bos_token_id=eot_id, eos_token_id=eot_id)
    if norm != "layernorm":
        fields[NORM_KEY] = norm if isinstance(norm, str) else dict(norm)
    return fields


def write_json(path: Path, value: dict) -> None:
    """Indented JSON and a newline."""
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def write_model_files(folder: Path, config: GPT2Config, tensors: Mapping[str, Tensor], norm: NormNames,
                      tokenizer_source: str | os.PathLike, eot_id: int | None) -> None:
    """config.json, the tokenizer's vocab.json + merges.txt, then model.safetensors (`tensors` by their official
    names, on the CPU), into `folder`. The unembedding is untied when `tensors` hold lm_head.weight."""
    tied = "lm_head.weight" not in tensors
    write_json(folder / "config.json", config_json(config, norm, eot_id, tied))
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(resolve_file(tokenizer_source, name), folder / name)
    save_tensors(tensors, folder / "model.safetensors")


def save_tensors(tensors: Mapping[str, Tensor], path: Path) -> None:
    """A safetensors file with the mode open() gives a new file, as config.json beside it has (0o644 under
    umask 022: safetensors itself makes its files 0o600)."""
    save_file(dict(tensors), str(path), metadata={"format": "pt"})
    os.chmod(path, 0o666 & ~umask())


def save_model_folder(folder: str | os.PathLike, config: GPT2Config, tensors: Mapping[str, Tensor],
                      norm: NormNames, tokenizer_source: str | os.PathLike, eot_id: int | None = None) -> Path:
    """Write a model's files into `folder` as one checkpoint (checkpoint_folder.write_checkpoint)."""
    write_checkpoint(Path(folder), "model",
                     lambda unit: write_model_files(unit, config, tensors, norm, tokenizer_source, eot_id))
    return Path(folder)
