"""Shared fixtures: random GPT-2 checkpoints written by Hugging Face `transformers` itself (the oracle).

Every parameter is random, layer-norm γ/β and biases included: a fresh `transformers` model has γ = 1,
β = 0 and zero biases, which would hide transposition and folding bugs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

SMALL = dict(n_layer=2, n_head=4, n_embd=48, n_positions=32, vocab_size=101)  # d_head = 12, not 64
FULL_124M = dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257)


def hf_config(**shape) -> "transformers.GPT2Config":
    """A transformers GPT2Config of the given shape, eager attention (the plain reference), no dropout."""
    config = transformers.GPT2Config(
        **shape, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0
    )
    config._attn_implementation = "eager"
    return config


@torch.no_grad()
def random_hf_model(seed: int = 0, **shape) -> "transformers.GPT2LMHeadModel":
    """A GPT2LMHeadModel with every parameter drawn at random (γ ≈ 1 ± 0.2, β, biases ≠ 0).

    Weight matrices use GPT-2's own initial scale (std 0.02) so the residual stream stays O(1-10) and an
    absolute tolerance of 1e-4 measures implementation error, not float32 rounding of huge values."""
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(hf_config(**shape)).eval()
    for name, p in model.named_parameters():
        if ".ln_" in name or name.startswith("transformer.ln_f"):
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if name.endswith("weight") else 0.1 * torch.randn_like(p))
        elif name.endswith("bias"):
            p.copy_(0.05 * torch.randn_like(p))
        elif name.startswith(("transformer.wte", "transformer.wpe")):
            p.copy_(0.1 * torch.randn_like(p))
        else:
            p.copy_(0.02 * torch.randn_like(p))
    return model


def save_official_layout(model, folder: Path, with_config: bool = True) -> Path:
    """Write `model` as the official hub file: no `transformer.` prefix, causal-mask buffers, no lm_head."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    n_ctx = model.config.n_positions
    tensors = {k.removeprefix("transformer."): v.contiguous() for k, v in model.state_dict().items()
               if not k.startswith("lm_head")}
    for i in range(model.config.n_layer):
        tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n_ctx, n_ctx)).view(1, 1, n_ctx, n_ctx)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if with_config:
        model.config.to_json_file(str(folder / "config.json"))
    return folder / "model.safetensors"


def save_transformers_layout(model, folder: Path) -> Path:
    """`save_pretrained`: `transformer.` prefix, config.json beside the weights."""
    model.save_pretrained(str(folder))
    return folder / "model.safetensors"


@pytest.fixture(scope="session")
def small_hf():
    return random_hf_model(seed=1, **SMALL)


@pytest.fixture(scope="session")
def small_checkpoints(small_hf, tmp_path_factory) -> dict[str, Path]:
    """The small random model in both layouts."""
    root = tmp_path_factory.mktemp("small")
    return {
        "official": save_official_layout(small_hf, root / "official").parent,
        "transformers": save_transformers_layout(small_hf, root / "transformers").parent,
    }


@pytest.fixture(scope="session")
def full_hf():
    return random_hf_model(seed=2, **FULL_124M)


@pytest.fixture(scope="session")
def full_checkpoints(full_hf, tmp_path_factory) -> dict[str, Path]:
    """The 124M-shape random model in both layouts (about 0.5 GB each, written once per session)."""
    root = tmp_path_factory.mktemp("full")
    return {
        "official": save_official_layout(full_hf, root / "official").parent,
        "transformers": save_transformers_layout(full_hf, root / "transformers").parent,
    }


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No drop-in weights and an empty, offline Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("MINIGPT_GEOM_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    return dict(os.environ)


TINY = dict(n_layer=2, n_head=4, n_embd=48, n_positions=64, vocab_size=300)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random model with a real (trained) byte-level tokenizer: a folder with model.safetensors,
    config.json, vocab.json and merges.txt, usable as `source` for every command."""
    from bpe_files import write_vocab

    folder = tmp_path_factory.mktemp("tiny")
    assert write_vocab(folder, TINY["vocab_size"] - 257) == TINY["vocab_size"]
    save_official_layout(random_hf_model(seed=4, **TINY), folder)
    return folder


# ---- training: a corpus every machine has, tokenised once --------------------------------------------


@pytest.fixture
def one_thread():
    """Tensors this small gain nothing from a second thread, and lose much when other work shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A folder with a few files of the Python standard library's source (every machine has them)."""
    import shutil
    import sysconfig

    from tiny_training import STDLIB_FILES

    folder = tmp_path_factory.mktemp("corpus")
    for name in STDLIB_FILES:
        shutil.copy(Path(sysconfig.get_paths()["stdlib"]) / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tokens(corpus, tiny_checkpoint, tmp_path_factory) -> Path:
    """The corpus tokenised with the tests' tiny trained vocabulary (300 ids)."""
    from minigpt_geom.text.token_files import prepare

    folder = tmp_path_factory.mktemp("tokens")
    prepare(corpus, tiny_checkpoint, folder, progress=False)
    return folder
