"""Several models side by side on the same text: how far each word travels, how long its vector is, where the
norm sites put it, and how soon each layer's decoding agrees with the final one. Made for models that differ
in their norm variant (one small model trained with each, or a model and its LN-free fine-tune): what
happens to the trajectory when there is no sphere?

Every number is each model's own: its trace (the angle in its own variant's geometry), its own ln_f and
unembedding for the lens. The 3-D view fits one PCA on the ln_f points of every model together, so the
paths share one frame; that needs one width d for all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..model.gpt2 import GPT2
from ..model.variants import geometry_summary
from ..model.trace import TraceRequest
from .lens import logit_lens
from .text import encode_text, token_words
from .trajectory import choose_highlight, ln_f_points, pca_basis, pca_project

if TYPE_CHECKING:
    from ..text.tokenizer import Tokenizer


@dataclass(frozen=True)
class ModelPaths:
    """One model's trajectories in the shared 3-D frame."""

    label: str  # the model's name and its geometry, for legends
    coords: np.ndarray  # [L+1, T, 3] ln_f(x_l) of every token, projected


@dataclass(frozen=True)
class Comparison:
    """The per-layer rows of every model, and their paths in one PCA frame (None when widths differ)."""

    rows: list[dict]  # one per (model, state l): see compare_rows
    words: list[str]  # [T]
    highlight: int  # the word drawn bold in the 3-D view
    paths: list[ModelPaths] | None
    explained_variance: np.ndarray | None  # [3] of the shared PCA


def model_label(name: str, model: GPT2) -> str:
    """`name` and where its sites put a point, e.g. "tiny-dyt (every site is dyt: the open box (−1, 1)^d)"."""
    return f"{name} ({geometry_summary({s: m.variant for s, m in model.norm_sites().items()})})"


def check_comparable(models: dict[str, GPT2], vocabulary: int) -> None:
    """InputError unless the tokenizer fits every model's vocabulary (the text's length is checked per model)."""
    for name, model in models.items():
        if vocabulary > model.config.vocab_size:
            raise InputError(f"the tokenizer has {vocabulary} ids but {name} has {model.config.vocab_size} words: "
                             f"compare models that share a tokenizer")


@torch.inference_mode()
def compare_models(models: dict[str, GPT2], tokenizer: Tokenizer, text: str, word: str | None = None) -> Comparison:
    """Run `text` through every model (name -> model) and gather the per-layer means and the shared 3-D frame."""
    if len(models) < 2:
        raise InputError("compare needs at least two models")
    check_comparable(models, tokenizer.n_vocab)
    ids = encode_text(tokenizer, text, min(m.config.n_ctx for m in models.values()))
    words = token_words(tokenizer, ids)
    highlight = choose_highlight(words, word)
    rows, points = [], {}
    for name, model in models.items():
        idx = torch.tensor([ids], device=model.wte.weight.device)
        _, trace = model(idx, trace=TraceRequest(states=True))
        lens = logit_lens(model, trace)
        norms = trace.states.float().norm(dim=-1)  # [L+1, 1, T]
        radius = torch.cat([trace.ln_1.radius, trace.ln_f.radius[None]])  # [L+1, 1, T]: the site reading x_l
        for layer in range(lens.n_states):
            rows.append({"model": name, "layer": layer, "residual_norm": norms[layer].mean().item(),
                         "radius": radius[layer].mean().item(),
                         "angular_step": lens.angular_step[layer].mean().item(),
                         "angular_path": lens.angular_path[layer].mean().item(),
                         "kl_to_final": lens.kl_to_final[layer].mean().item(),
                         "prediction_rank": lens.prediction_rank[layer].float().mean().item()})
        points[name] = ln_f_points(model, trace.states[:, 0])  # [L+1, T, d]
    widths = {p.shape[-1] for p in points.values()}
    if len(widths) > 1:
        return Comparison(rows, words, highlight, None, None)
    mean, components, explained = pca_basis(torch.cat([p.reshape(-1, p.shape[-1]) for p in points.values()]))
    paths = [ModelPaths(model_label(name, models[name]), pca_project(p, mean, components))
             for name, p in points.items()]
    return Comparison(rows, words, highlight, paths, explained.numpy())


def unique_labels(sources: Sequence[str], labels: Sequence[str] | None = None) -> list[str]:
    """One name per model: `labels` if given, else each source's last path component, numbered where equal."""
    if labels is not None:
        if len(labels) != len(sources):
            raise InputError(f"--labels gives {len(labels)} names for {len(sources)} models")
        names = list(labels)
    else:  # folder names are drawn as they are: a `$` in one is not mathtext
        names = [(os.path.basename(os.path.normpath(str(s))) or str(s)).replace("$", r"\$") for s in sources]
    counts = {n: names.count(n) for n in names}
    seen: dict[str, int] = {}
    unique = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        unique.append(f"{n} #{seen[n]}" if counts[n] > 1 else n)
    return unique
