"""What the tests share besides fixtures: random GPT-2 checkpoints in Hugging Face's file formats, and a skip
that names the extra a test needs.

Every parameter of a random checkpoint is random, layer-norm γ/β and biases included: a fresh `transformers`
model has γ = 1, β = 0 and zero biases, which would hide transposition and folding bugs. The files are written
here with `safetensors` alone, in the official hub layout, so a test that needs no oracle runs without
`transformers`; a test that needs the oracle loads the same file into `transformers.GPT2LMHeadModel`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from minigpt_geom.text.tokenizer import Tokenizer

# The shared small model (d_head = 12, not 64; 300 ids: a trained byte-level vocabulary of 43 merges fits).
SMALL = dict(n_layer=2, n_head=4, n_embd=48, n_positions=64, vocab_size=300)
FULL_124M = dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257)

EXTRAS = {"transformers": "hf", "matplotlib": "plot", "tiktoken": "fast", "tokenizers": "fast", "hypothesis": "test",
          "pandas": "test", "transformer_lens": "lens"}


def needs(module: str) -> ModuleType:
    """`module`, imported, or a skip of the test (or module, or fixture) that needs it, naming its extra."""
    return pytest.importorskip(module, reason=f"needs {module} (pip install -e .[{EXTRAS[module]}])")


def requires(module: str) -> pytest.MarkDecorator:
    """A mark that skips a test when `module` is not installed, naming its extra (for a test that only reaches
    the module through the package: a command that draws needs matplotlib, `verify` needs transformers)."""
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"needs {module} (pip install -e .[{EXTRAS[module]}])")


def random_tensors(seed: int = 0, **shape) -> dict[str, torch.Tensor]:
    """GPT-2's tensors under the official file's names, Conv1D layout ([in, out]), every one drawn at random.

    γ ≈ 1 ± 0.2, β and biases ≠ 0; weight matrices at GPT-2's own initial scale (std 0.02) so the residual stream
    stays O(1-10) and an absolute tolerance of 1e-4 measures implementation error, not float32 rounding."""
    d, n_layer = shape["n_embd"], shape["n_layer"]
    shapes = {"wte.weight": (shape["vocab_size"], d), "wpe.weight": (shape["n_positions"], d)}
    for i in range(n_layer):
        shapes.update({f"h.{i}.ln_1.weight": (d,), f"h.{i}.ln_1.bias": (d,),
                       f"h.{i}.attn.c_attn.weight": (d, 3 * d), f"h.{i}.attn.c_attn.bias": (3 * d,),
                       f"h.{i}.attn.c_proj.weight": (d, d), f"h.{i}.attn.c_proj.bias": (d,),
                       f"h.{i}.ln_2.weight": (d,), f"h.{i}.ln_2.bias": (d,),
                       f"h.{i}.mlp.c_fc.weight": (d, 4 * d), f"h.{i}.mlp.c_fc.bias": (4 * d,),
                       f"h.{i}.mlp.c_proj.weight": (4 * d, d), f"h.{i}.mlp.c_proj.bias": (d,)})
    shapes.update({"ln_f.weight": (d,), "ln_f.bias": (d,)})
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, size in shapes.items():
        noise = torch.randn(size, generator=generator)
        if ".ln_" in name or name.startswith("ln_f"):
            tensors[name] = 1.0 + 0.2 * noise if name.endswith("weight") else 0.1 * noise
        elif name.endswith("bias"):
            tensors[name] = 0.05 * noise
        elif name.startswith(("wte", "wpe")):
            tensors[name] = 0.1 * noise
        else:
            tensors[name] = 0.02 * noise
    return tensors


def config_json(**shape) -> dict:
    """config.json as the hub's gpt2 has it, for `shape`: no dropout, tied unembedding, GPT-2's tanh GELU."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5, "n_ctx": shape["n_positions"], **shape, "n_inner": None,
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "bos_token_id": 0, "eos_token_id": 0,
            "scale_attn_weights": True, "tie_word_embeddings": True}


def write_official(folder: Path, tensors: dict[str, torch.Tensor], config: dict | None) -> Path:
    """The official hub file: no `transformer.` prefix, the causal-mask buffers, no lm_head; config.json if given."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k.removeprefix("transformer."): v.contiguous() for k, v in tensors.items() if not k.startswith("lm_head")}
    n_ctx = tensors["wpe.weight"].shape[0]
    for i in range(1 + max(int(k.split(".")[1]) for k in tensors if k.startswith("h."))):
        tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n_ctx, n_ctx)).view(1, 1, n_ctx, n_ctx)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder / "model.safetensors"


def write_random_checkpoint(folder: Path, seed: int = 0, with_config: bool = True, **shape) -> Path:
    """A random GPT-2 of `shape` in the official layout (`random_tensors`); returns model.safetensors."""
    return write_official(folder, random_tensors(seed, **shape), config_json(**shape) if with_config else None)


def hf_config(**shape):
    """A transformers GPT2Config of the given shape, eager attention (the plain reference), no dropout."""
    transformers = needs("transformers")
    config = transformers.GPT2Config(**config_json(**shape))
    config._attn_implementation = "eager"
    return config


@torch.no_grad()
def random_hf_model(seed: int = 0, **shape):
    """A transformers GPT2LMHeadModel holding `random_tensors(seed, **shape)`: the oracle on the same weights."""
    transformers = needs("transformers")
    model = transformers.GPT2LMHeadModel(hf_config(**shape)).eval()
    loaded = model.transformer.load_state_dict(random_tensors(seed, **shape), strict=False)
    assert not loaded.unexpected_keys and not loaded.missing_keys, loaded  # every parameter replaced, by name
    return model


def load_hf(folder: Path):
    """transformers' own load of a checkpoint folder, eager attention, in eval mode."""
    transformers = needs("transformers")
    return transformers.GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="eager").eval()


def save_official_layout(model, folder: Path, with_config: bool = True) -> Path:
    """Write a transformers `model` as the official hub file (see `write_official`)."""
    path = write_official(folder, model.state_dict(), None)
    if with_config:
        model.config.to_json_file(str(folder / "config.json"))
    return path


def save_transformers_layout(model, folder: Path) -> Path:
    """`save_pretrained`: `transformer.` prefix, config.json beside the weights."""
    model.save_pretrained(str(folder))
    return folder / "model.safetensors"


def in_memory(merges: list[tuple[bytes, bytes]], **options) -> Tokenizer:
    """A Tokenizer whose vocabulary is the 256 bytes plus every token the merges use or make."""
    from minigpt_geom.text.tokenizer import Tokenizer

    tokens = dict.fromkeys([bytes([b]) for b in range(256)] + [t for a, b in merges for t in (a, b, a + b)])
    return Tokenizer({token: i for i, token in enumerate(tokens)}, merges, {}, **options)
