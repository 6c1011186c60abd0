"""minigpt_geom: GPT-2 from first principles, with a forward pass that reports its own geometry.

The names below are imported on first use (PEP 562), so that `import minigpt_geom` and the command line's
`--help` do not pay for torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import (CheckpointError, InputError, LNFreeWarning, MiniGPTGeomError, Note, OutputError,
                     WeightsNotFoundError)

if TYPE_CHECKING:
    from .model.cache import KVCache
    from .config import PRESETS, GPT2Config
    from .model.kernels import reference_math
    from .text.generation import Sampling, generate
    from .model.gpt2 import GPT2
    from .model.variants import NORM_VARIANTS, NormVariant, register_norm
    from .model.trace import Trace
    from .model.trace_request import TraceRequest
    from .text.tokenizer import Tokenizer

LAZY = {"KVCache": "model.cache", "PRESETS": "config", "GPT2Config": "config", "Sampling": "text.generation",
        "generate": "text.generation", "GPT2": "model.gpt2", "NORM_VARIANTS": "model.variants",
        "NormVariant": "model.variants", "register_norm": "model.variants", "Trace": "model.trace",
        "TraceRequest": "model.trace_request", "reference_math": "model.kernels", "Tokenizer": "text.tokenizer"}  # name -> the module that defines it

__all__ = [
    "GPT2", "GPT2Config", "Tokenizer", "KVCache", "PRESETS", "Trace", "TraceRequest", "Sampling", "generate",
    "NORM_VARIANTS", "NormVariant", "register_norm", "reference_math",
    "MiniGPTGeomError", "WeightsNotFoundError", "CheckpointError", "InputError", "OutputError", "Note", "LNFreeWarning",
]


def __getattr__(name: str) -> object:
    """Import a public name's module when the name is first used."""
    if name not in LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{LAZY[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    """The module's names, the lazy ones included."""
    return sorted({*globals(), *LAZY})
