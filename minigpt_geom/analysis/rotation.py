"""Moving a word: turn its point at a norm site toward another word, and watch the answer's probability.

A norm site puts a word's state on its own set: layer norm on the √d-sphere inside the plane Σx = 0, RMSNorm
on the √d-sphere. The rotate edit turns the point p of one position in the plane of p and a target direction
u (another word's point on the same set), by an angle θ, keeping the radius:

    p(θ) = cos θ · p + sin θ · ‖p‖ û⊥,      û⊥ = the unit part of u orthogonal to p

θ = 0 is the word as it is, θ = π/2 a point as far from it as from u's side, all on the set the site reads.
The model then runs on from the rotated point, and m (metric.py) is read at the last position. Every (layer,
angle) is one row of one batch. A variant without a sphere (DyT's box, no normalisation, fixed σ) has no
such rotation: it is refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .metric import METRIC_WORDS, Contrast
from .tables import Table


@dataclass(frozen=True)
class RotationResult:
    """m against θ for the word at `position`, turned toward `toward_word` at each layer's site."""

    site: str  # the norm site kind turned, e.g. "ln_1"
    layers: tuple[int, ...]
    angles: Tensor  # [A] radians, 0 … π/2
    values: Tensor  # [len(layers), A] float32: m with the point turned by angles[a] at layers[i]
    contrast: Contrast
    words: tuple[str, ...]
    position: int
    toward_word: str
    answer_word: str
    passes: int = 0

    @property
    def metric_words(self) -> str:
        """The metric in words."""
        return METRIC_WORDS[self.contrast.metric]


def rotation_rows(result: RotationResult) -> list[dict]:
    """One record per (layer, angle): θ in radians and degrees, m (full precision)."""
    return [{"layer": layer, "theta": float(theta), "degrees": float(theta) * 180 / 3.141592653589793,
             "metric": float(result.values[i, a])}
            for i, layer in enumerate(result.layers) for a, theta in enumerate(result.angles)]


def rotation_matrix(result: RotationResult) -> Table:
    """m per layer (rows) and angle (columns, degrees)."""
    header = ["layer", *(f"{float(theta) * 180 / 3.141592653589793:.0f}°" for theta in result.angles)]
    rows = [[layer, *(float(v) for v in result.values[i])] for i, layer in enumerate(result.layers)]
    caption = (f"{result.metric_words} with {result.words[result.position]!r} (position {result.position}) turned "
               f"toward {result.toward_word!r} at each layer's {result.site}, by θ")
    return Table(header, rows, caption)
