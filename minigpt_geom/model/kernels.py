"""Which implementation of each step a model runs: the reference math or the fused kernels, chosen per model.

    model.kernels = "reference"          # this model runs the math as written (explicit pattern, centre -> normalise)
    model.kernels = "fused"              # the default: fused.py's kernels, equal to 1e-5 (tests hold them so)
    with reference_math():               # every model, in this thread (or task) only, for the block's duration
        logits = model(idx)

As Hugging Face's attention-function registry does, a set is chosen by name (`KERNELS`; `register_kernels`
adds one), read once at the start of a forward pass and handed down to each step, never looked up in a global
while the pass runs: two threads running one model under different choices do not see each other's.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from ..errors import InputError
from .attention import attend, attend_traced
from .block import gelu
from .fused import FUSED, Kernels
from .sphere import sphere_projection

REFERENCE = Kernels("reference", sphere_projection, gelu, attend, attend_traced)
KERNELS: dict[str, Kernels] = {REFERENCE.name: REFERENCE, FUSED.name: FUSED}

# Set by reference_math(): a context variable is per thread (and per asyncio task), so the override is too.
OVERRIDE: ContextVar[Kernels | None] = ContextVar("minigpt_geom_kernels", default=None)


def register_kernels(kernels: Kernels) -> Kernels:
    """Make a kernel set available by its name (`model.kernels = kernels.name`); the built-in two stay."""
    if not isinstance(kernels, Kernels):
        raise TypeError(f"register_kernels takes a fused.Kernels, got {type(kernels).__name__}")
    if kernels.name in (REFERENCE.name, FUSED.name):
        raise InputError(f"kernel set {kernels.name!r} is built in and cannot be replaced")
    KERNELS[kernels.name] = kernels
    return kernels


def check_kernels(name: str) -> str:
    """`name` if a kernel set is registered under it, else InputError listing the registered ones."""
    if not isinstance(name, str) or name not in KERNELS:
        raise InputError(f"unknown kernel set {name!r}; registered: {', '.join(KERNELS)}")
    return name


def chosen_kernels(name: str) -> Kernels:
    """The set a forward pass runs: the reference math inside reference_math(), else the model's own."""
    return OVERRIDE.get() or KERNELS[name]


@contextmanager
def reference_math() -> Iterator[None]:
    """Run the reference math (explicit scores, centre -> normalise, GELU's formula) in every model's forward
    pass inside the `with` block, in this thread only."""
    token = OVERRIDE.set(REFERENCE)
    try:
        yield
    finally:
        OVERRIDE.reset(token)
