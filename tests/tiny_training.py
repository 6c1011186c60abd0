"""The tiny training setup that the training and layer-norm removal tests share (their fixtures are in conftest)."""

from __future__ import annotations

from minigpt_geom import GPT2, GPT2Config
from minigpt_geom.train import new_model

STDLIB_FILES = ["textwrap.py", "string.py", "shlex.py", "fnmatch.py", "bisect.py", "heapq.py"]
SHAPE = dict(n_layer=2, n_head=2, n_embd=32, n_ctx=64)
FAST = dict(batch_size=8, learning_rate=3e-3, warmup_steps=2, eval_windows=16, sample_tokens=0)


def tiny_model(norm="layernorm", seed=0) -> GPT2:
    """A fresh 2-layer, 32-wide model over the tests' 300-id vocabulary."""
    return new_model(GPT2Config(vocab_size=300, **SHAPE), norm=norm, seed=seed)
