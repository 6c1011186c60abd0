"""Shared fixtures: one small random GPT-2 with a trained tokenizer (built once a session, in the official hub
layout, by helpers.py), the same model in `transformers` (the oracle), a 124M-shape one, and a training corpus.

A fixture that needs an extra skips the tests that use it, by name (helpers.needs); the rest need none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers import FULL_124M, SMALL, load_hf, save_transformers_layout, write_random_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The shared small model: a folder with model.safetensors, config.json, vocab.json and merges.txt (a real,
    trained byte-level vocabulary of 300 ids), usable as `source` for every command and by transformers."""
    from bpe_files import write_vocab

    folder = tmp_path_factory.mktemp("small")
    assert write_vocab(folder, SMALL["vocab_size"] - 257) == SMALL["vocab_size"]
    write_random_checkpoint(folder, seed=1, **SMALL)
    return folder


@pytest.fixture(scope="session")
def small_hf(tiny_checkpoint):
    """The shared small model in transformers' GPT2LMHeadModel, eager attention."""
    return load_hf(tiny_checkpoint)


@pytest.fixture(scope="session")
def small_checkpoints(tiny_checkpoint, small_hf, tmp_path_factory) -> dict[str, Path]:
    """The shared small model in both layouts: the official one and `save_pretrained`'s."""
    folder = tmp_path_factory.mktemp("small_transformers")
    save_transformers_layout(small_hf, folder)
    return {"official": tiny_checkpoint, "transformers": folder}


@pytest.fixture(scope="session")
def full_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A random 124M-shape model in both layouts (about 0.5 GB each, written once per session)."""
    root = tmp_path_factory.mktemp("full")
    write_random_checkpoint(root / "official", seed=2, **FULL_124M)
    save_transformers_layout(load_hf(root / "official"), root / "transformers")
    return {"official": root / "official", "transformers": root / "transformers"}


@pytest.fixture(scope="session")
def full_hf(full_checkpoints):
    """The 124M-shape model in transformers."""
    return load_hf(full_checkpoints["official"])


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No drop-in weights and an empty, offline Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("MINIGPT_GEOM_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    return dict(os.environ)


# ---- training: a corpus every machine has, tokenised once --------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Every test on one intra-op thread: tensors this small gain nothing from a second, and when other work shares
    the cores the idle thread's spin-waiting costs many times the test's own CPU time (the fast tier at load 8:
    3 min 52 s of CPU on two threads, bench/NOTES.md). Tests that ask for it by name still get it."""
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
