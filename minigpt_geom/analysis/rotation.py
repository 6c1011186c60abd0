"""Moving a word: turn its point at a norm site toward another word, and watch the answer's probability.

A norm site puts a word's state on its own set: layer norm on the √d-sphere inside the plane Σx = 0, RMSNorm
on the √d-sphere. The Rotate edit turns the point p of one position in the plane of p and a target u, by an
angle θ, keeping the radius:

    p(θ) = cos θ · p + sin θ · ‖p‖ û⊥,      û⊥ = the unit part of u orthogonal to p

Here u is another word w's row of the unembedding, e_w (E[w] for GPT-2's tied head): the direction the output
matches points against, seen in the site's own geometry (centred for layer norm). θ = 0 is the word as it is;
at θ = ∠(p, u) the point faces w; θ = π/2 is a quarter turn, orthogonal to where it started, on w's side. The
model then runs on from the turned point, and m (metric.py) is read at the last position. Every (layer, angle)
is one row of one batch. A variant without a sphere (DyT's box, no normalisation, fixed σ) has no such rotation:
the edit refuses it in one line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import InputError
from ..model.edits import Rotate
from ..model.gpt2 import GPT2
from .batching import chunks, pass_rows
from .metric import METRIC_WORDS, Contrast, choose_contrast, single_token
from .tables import Table
from .text import encode_text, token_words

if TYPE_CHECKING:
    from ..text.tokenizer import Tokenizer

NORM_SITES = ("ln_1", "ln_2", "ln_f")


@dataclass(frozen=True)
class RotationResult:
    """m against θ for the word at `position`, turned toward `toward_word` at each layer's site."""

    site: str  # the norm site kind turned, e.g. "ln_1"
    layers: tuple[int | None, ...]  # (None,) for ln_f
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


def check_rotation_site(site: str) -> None:
    """InputError unless `site` is a norm site whose point can be turned."""
    if site not in NORM_SITES:
        raise InputError(f"a word's point is turned at a norm site ({', '.join(NORM_SITES)}), not {site!r}", "site")


@torch.inference_mode()
def rotation_sweep(model: GPT2, idx: Tensor, toward: Tensor, contrast: Contrast, *, position: int = -1,
                   layers: Sequence[int] | None = None, site: str = "ln_1", steps: int = 9,
                   rows: int | None = None) -> tuple[Tensor, Tensor, int]:
    """The point of `position` at `site` of each of `layers` (ln_f: none) turned toward `toward` [d] by `steps`
    angles from 0 to π/2: (angles [A], m [len(layers), A], forward passes). θ = 0 runs unedited."""
    check_rotation_site(site)
    contrast.check(model.config.vocab_size)
    if steps < 2:
        raise InputError(f"a rotation curve needs at least 2 angles (0 and π/2), got {steps}", "steps")
    L, T = model.config.n_layer, idx.shape[1]
    if not -T <= position < T:
        raise InputError(f"position {position} is outside the text's {T} tokens", "position")
    if site == "ln_f":
        if layers:
            raise InputError("ln_f follows the last block and has no layer: leave out the layers", "layer")
        if position % T != T - 1:
            raise InputError("ln_f's point of one position is read by that position's logits alone: turning position "
                             f"{position} cannot change the last position's answer; turn the last one", "position")
        layers = [None]
    layers = list(range(L) if layers is None else layers)
    bad = [layer for layer in layers if layer is not None and not 0 <= layer < L]
    if bad:
        raise InputError(f"layer {bad[0]} is outside the model's blocks 0 … {L - 1}", "layer")
    angles = torch.linspace(0.0, math.pi / 2, steps)
    A = len(angles)
    n = len(layers) * A  # row i·A + a: layers[i] turned by angles[a]
    size = pass_rows(model, T, rows)
    measured, passes = torch.empty(n), 0
    toward = toward.to(model.wte.weight.device)
    for chunk in chunks(n, size):
        edits = [Rotate(site, layer=layers[r // A], rows=r - chunk.start, positions=position % T,
                        angle=float(angles[r % A]), toward=toward) for r in chunk if r % A]
        logits = model(idx.expand(len(chunk), T), edits=edits, last_only=True)[:, -1]
        measured[chunk.start:chunk.stop] = contrast.measure(logits).cpu()
        passes += 1
    return angles, measured.view(len(layers), A), passes


def text_rotation(model: GPT2, tokenizer: Tokenizer, text: str, toward: str, answer: str | None = None,
                  wrong: str | None = None, *, metric: str = "probability", position: int = -1,
                  layers: Sequence[int] | None = None, site: str = "ln_1", steps: int = 9) -> RotationResult:
    """A word of the text turned toward the word `toward` (its unembedding row) at each layer's site; the answer
    defaults to the most likely next word, the wrong one to the second."""
    check_rotation_site(site)
    ids = encode_text(tokenizer, text, model.config.n_ctx)
    toward_id = single_token(tokenizer, toward, "--toward")
    idx = torch.tensor([ids], device=model.wte.weight.device)
    with torch.inference_mode():
        logits = model(idx, last_only=True)[0, -1]
    contrast, answer_word, _ = choose_contrast(tokenizer, logits, answer, wrong, metric)
    u = model.unembedding_rows()[toward_id].detach()
    angles, values, passes = rotation_sweep(model, idx, u, contrast, position=position, layers=layers, site=site,
                                            steps=steps)
    layers_done = (None,) if site == "ln_f" else tuple(range(model.config.n_layer) if layers is None else layers)
    return RotationResult(site, layers_done, angles, values, contrast, tuple(token_words(tokenizer, ids)),
                          position % len(ids), tokenizer.decode([toward_id]), answer_word, passes + 1)


def layer_name(layer: int | None) -> str:
    """"3" for block 3's site, "ln_f" for the final one."""
    return "ln_f" if layer is None else str(layer)


def rotation_rows(result: RotationResult) -> list[dict]:
    """One record per (layer, angle): θ in radians and degrees, m (full precision)."""
    return [{"layer": layer_name(layer), "theta": float(theta), "degrees": math.degrees(float(theta)),
             "metric": float(result.values[i, a])}
            for i, layer in enumerate(result.layers) for a, theta in enumerate(result.angles)]


def rotation_matrix(result: RotationResult) -> Table:
    """m per layer (rows) and angle (columns, degrees)."""
    header = ["layer", *(f"{math.degrees(float(theta)):.0f}°" for theta in result.angles)]
    rows = [[layer_name(layer), *(float(v) for v in result.values[i])] for i, layer in enumerate(result.layers)]
    caption = (f"{result.metric_words} with {result.words[result.position]!r} (position {result.position}) turned "
               f"toward {result.toward_word!r} at each layer's {result.site}, by θ")
    return Table(header, rows, caption)
