"""What a traced forward pass keeps: the one switch that the model, its blocks and their attention read.

Its own module, below attention.py and block.py, so that they can name the type without importing trace.py
(which imports them for their diagnostics)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .edits import SITES


@dataclass(frozen=True)
class TraceRequest:
    """What a traced forward pass keeps besides the per-position summaries, which it always computes."""

    states: bool = False  # the residual states x_0 … x_L, [L+1, B, T, d]
    patterns: bool = False  # every head's attention pattern a_ij, [L, B, H, T, T]
    capture: tuple[str, ...] = ()  # sites (edits.SITES) whose values trace.captured keeps, stacked by layer

    def __post_init__(self) -> None:
        capture = (self.capture,) if isinstance(self.capture, str) else tuple(self.capture)
        unknown = [site for site in capture if site not in SITES]
        if unknown:
            raise InputError(f"TraceRequest.capture: unknown site {unknown[0]!r}; sites: {', '.join(SITES)}")
        object.__setattr__(self, "capture", tuple(dict.fromkeys(capture)))  # a tuple, each site once


def as_request(trace: bool | TraceRequest | None) -> TraceRequest | None:
    """The one switch: None/False = no tracing, True = summaries only, or a TraceRequest."""
    if isinstance(trace, TraceRequest) or trace is None:
        return trace
    if isinstance(trace, bool):
        return TraceRequest() if trace else None
    raise InputError(f"trace must be a bool or a TraceRequest, got {type(trace).__name__}")
