"""The model's half of its files: a GPT-2 built from a checkpoint, and written back as one.

io/checkpoint.py reads and checks a file without knowing the model: a `GPT2Config`, the tensors' names and
shapes, and the norm variant names config.json states. Here the norm registry judges those names and the
variants' learned scalars, the model is built (the class is passed in: `GPT2.from_pretrained` calls this) and
filled, and a file that switches layer norm off from the inside (ε ≥ 1e10) becomes the exact norm="none" model
it stands for (lnfree.py). Writing goes the other way: the tensors, config and norm names to io/model_files.py.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import GPT2Config, norm_site_names
from ..errors import CheckpointError, InputError, LNFreeWarning
from ..io.checkpoint import Checkpoint, NormNames, check_tensors, fill_tensors, read_checkpoint
from ..io.model_files import save_model_folder, write_model_files
from ..memory import check_fits, model_bytes, parameter_count
from .lnfree import from_ln_free_eps, is_ln_free_eps
from .variants import NormSpec, check_norm_spec, norm_for_site


def checked_norm(checkpoint: Checkpoint) -> NormSpec | None:
    """The variant(s) config.json states, each a registered variant of a site the model has (CheckpointError naming
    the file if not)."""
    stated = checkpoint.norm
    if stated is None:
        return None
    try:
        check_norm_spec(stated, norm_site_names(checkpoint.config.n_layer))
    except InputError as error:
        raise CheckpointError(f"{checkpoint.config_path}: {error}") from None
    return stated


def variant_scalars(config: GPT2Config, norm: NormSpec) -> list[str]:
    """The learned scalars the variants of `norm` give a model of `config`: `h.0.ln_1.alpha`, … (0-d each)."""
    return [f"{site}.{name}" for site in norm_site_names(config.n_layer)
            for name in norm_for_site(norm, site).parameters]


def load_pretrained(cls: type[nn.Module], source: str | os.PathLike, *, device: str | torch.device,
                    dtype: torch.dtype, norm: NormSpec | None) -> nn.Module:
    """Build a `cls` (GPT2) of the checkpoint's shape and fill it from the file (see GPT2.from_pretrained).

    norm=None takes the checkpoint's own: config.json's "minigpt_geom_norm", else GPT-2's layer norm; a file
    in the LN-free convention (ε ≥ 1e10) then loads as the exact norm="none" model it stands for."""
    checkpoint = read_checkpoint(source)
    config, stated = checkpoint.config, checked_norm(checkpoint)
    if norm is not None:
        check_norm_spec(norm, norm_site_names(config.n_layer))
    chosen = norm if norm is not None else stated or "layernorm"
    check_tensors(checkpoint, variant_scalars(config, chosen))  # every name and shape, before any memory is spent
    # the model is built in float32 on the CPU first (a crafted 24 GiB file must not be allocated, then filled)
    check_fits(f"the model of {checkpoint.path} ({parameter_count(config):,} parameters)", model_bytes(config),
               torch.device("cpu"))
    ln_free = norm is None and stated is None and is_ln_free_eps(config.ln_eps) and not checkpoint.untied
    with torch.device("cpu"):  # parameters are torch.empty (uninitialised): storage is allocated once, then filled
        model = cls(config, norm=chosen, seed=None).to(torch.float32 if ln_free else dtype)  # fold in float32
        if checkpoint.untied:
            model.lm_head.untie(model.wte.weight)  # W and b are then filled from lm_head.weight, lm_head.bias
    fill_tensors(checkpoint, dict(model.named_parameters()))
    if ln_free:
        warnings.warn(f"{checkpoint.path}: layer norm is switched off inside this file (ε = {config.ln_eps:g}); "
                      f"loaded as an exact norm='none' model", LNFreeWarning, stacklevel=3)
        model = from_ln_free_eps(model)
    return model.to(device=device, dtype=dtype).eval()


def norm_spec(model: nn.Module) -> NormNames:
    """The GPT2's norm variants: one name when every site has the same, else a mapping site -> name."""
    sites = {name: module.variant.name for name, module in model.norm_sites().items()}
    names = set(sites.values())
    return names.pop() if len(names) == 1 else sites


def model_tensors(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter of the GPT2 under its official name, copied to the CPU (what model.safetensors holds)."""
    return {name: p.detach().to("cpu", copy=True).contiguous() for name, p in model.named_parameters()}


def write_files(model: nn.Module, folder: Path, tokenizer_source: str | os.PathLike, eot_id: int | None) -> None:
    """The GPT2's config.json, tokenizer files and model.safetensors into `folder` (a checkpoint being written)."""
    write_model_files(folder, model.config, model_tensors(model), norm_spec(model), tokenizer_source, eot_id)


def save_pretrained(model: nn.Module, folder: str | os.PathLike, tokenizer_source: str | os.PathLike,
                    eot_id: int | None = None) -> Path:
    """The GPT2 and its tokenizer written into `folder` as one checkpoint (see GPT2.save_pretrained)."""
    return save_model_folder(folder, model.config, model_tensors(model), norm_spec(model), tokenizer_source, eot_id)
