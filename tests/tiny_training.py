"""A tiny GPT-2 and fast settings that the training tests share (their fixtures are in conftest.py)."""

from __future__ import annotations

from minigpt_geom import GPT2, GPT2Config
from minigpt_geom.text.token_files import load_tokens
from minigpt_geom.training.loop import TrainSettings, train

STDLIB_FILES = ["textwrap.py", "string.py", "shlex.py", "fnmatch.py", "bisect.py", "heapq.py"]  # the corpus
SHAPE = dict(n_layer=2, n_head=2, n_embd=32, n_ctx=64)
FAST = dict(batch_size=8, learning_rate=3e-3, warmup_steps=2, eval_windows=16, sample_tokens=0)


def tiny_model(norm="layernorm", seed=0) -> GPT2:
    """A new 2-layer GPT-2 over the tests' 300-id vocabulary."""
    return GPT2(GPT2Config(vocab_size=300, **SHAPE), norm=norm, seed=seed)


def run(model, tokens, tokenizer, out, **settings) -> list:
    """train() with FAST settings, overridden by `settings`, and no progress bar."""
    return train(model, load_tokens(tokens), tokenizer, out, TrainSettings(**{**FAST, **settings}), progress=False)
