"""Experiment 4: the trajectory of each word on the sphere, LN_f(x_0), …, LN_f(x_L), seen in 3-D.

Every token's residual state at every layer is read the way the output head reads it, LN_f(x_l) (ln_f's own
module with its γ and β, so the points live where the unembedding looks for nearest words; for a model
without normalisation that is x_l itself, and `Trajectory.points` names what the points are), and all the
(L+1)·T points are projected to 3-D:

  - PCA (default, deterministic): centre the points, take the top 3 right singular vectors of the
    centred matrix (torch.linalg.svd, float64) and flip each one's sign so that the projected point
    farthest along it has a positive coordinate. The same points give the same picture on every run.
  - UMAP (`method="umap"`, needs `umap-learn`), seeded: fitted either on LN_f of the first 10,000 rows
    of the embedding E (`umap_fit="vocab"`, as the paper did) and then applied to the points, or on the
    points themselves (`umap_fit="points"`).

The predicted word of the highlighted token is marked at LN_f(e_pred), projected the same way: the paper's
" one" in "To kill two birds with one stone" drifts towards " stone".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError, import_optional
from ..model.gpt2 import GPT2
from ..model.variants import map_label

PAPER_WORD = " one"  # the word whose path the paper draws
UMAP_VOCAB_FIT = 10_000  # the paper fits UMAP on the first 10,000 normalised embeddings


@dataclass(frozen=True)
class Trajectory:
    """Every token's path through the layers in 3-D, and the highlighted word with its prediction."""

    words: list[str]  # [T] the text of each token
    coords: np.ndarray  # [L+1, T, 3] projected LN_f(x_l) of token t
    highlight: int  # position of the highlighted word
    prediction_id: int  # the model's next-word prediction at the highlighted position
    prediction_word: str
    prediction_coord: np.ndarray  # [3] projected LN_f(e_pred)
    method: str  # "pca" or "umap (fit on ...)"
    explained_variance: np.ndarray | None = None  # [3] s_i²/Σ s² of the centred points (PCA); None for UMAP
    target_cosine: np.ndarray | None = None  # [L+1] cos(LN_f(x_l), u_pred) of the highlighted word, in d dimensions
    prediction_coords: np.ndarray | None = None  # [T, 3] projected LN_f(e_pred) of every position's prediction
    target_cosines: np.ndarray | None = None  # [L+1, T] cos(LN_f(x_l[t]), u_pred[t]) of every position
    points: str = r"$\mathrm{LN}_{f}(x_l)$"  # mathtext for what was projected: ln_f's map of x_l in its variant


@torch.inference_mode()
def ln_f_points(model: GPT2, states: Tensor) -> Tensor:
    """x_l [..., d] -> ln_f(x_l) [..., d] by ln_f's own module: γ ⊙ sphere point + β for layer norm, each state
    with its own statistics; x_l itself without normalisation."""
    return model.ln_f(states)[0]


@torch.inference_mode()
def target_cosine(model: GPT2, states: Tensor, targets: Tensor | Sequence[int]) -> np.ndarray:
    """cos(LN_f(x_l[t]), u_target[t]) [L+1, T] for states [L+1, T, d] and targets [T]: how straight each point
    faces the unembedding row of its target in all d dimensions (the logit is ‖LN_f(x_l)‖‖u‖ times this cosine)."""
    points = ln_f_points(model, states).double()  # [L+1, T, d]
    rows = model.unembedding_rows()[torch.as_tensor(targets, device=states.device)].double()  # [T, d]
    return torch.nn.functional.cosine_similarity(points, rows[None], dim=-1).cpu().numpy()


def pca_basis(points: Tensor, n_components: int = 3) -> tuple[Tensor, Tensor, Tensor]:
    """(mean [d], components [n, d], explained variance share [n]) of points [N, d], float64, signs fixed.

    components are the top right singular vectors of (points − mean); each is flipped so that the
    coordinate of largest magnitude among the projected points is positive (sklearn's svd_flip rule).
    Fewer than n directions (N ≤ n or rank-deficient data) are padded with zero rows."""
    data = points.detach().to(torch.float64).cpu()
    mean = data.mean(dim=0)
    centred = data - mean  # [N, d]
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)  # vh [min(N, d), d]
    components = vh[:n_components]
    share = singular.square() / singular.square().sum().clamp_min(torch.finfo(torch.float64).tiny)  # s_i²/Σ s²
    explained = torch.cat([share[:n_components], share.new_zeros(max(n_components - len(share), 0))])
    coords = centred @ components.T  # [N, n]
    if coords.numel():
        largest = coords.abs().argmax(dim=0)  # [n]
        signs = torch.sign(coords[largest, torch.arange(components.shape[0])])
        components = components * torch.where(signs == 0, 1.0, signs)[:, None]
    if components.shape[0] < n_components:
        pad = torch.zeros(n_components - components.shape[0], data.shape[1], dtype=torch.float64)
        components = torch.cat([components, pad])
    return mean, components, explained


def pca_project(points: Tensor, mean: Tensor, components: Tensor) -> np.ndarray:
    """points [..., d] -> coordinates [..., n] = (points − mean) componentsᵀ."""
    return ((points.detach().to(torch.float64).cpu() - mean) @ components.T).numpy()


def umap_project(points: np.ndarray, fit_points: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """points [N, d] -> [N, 3] by a UMAP fitted on fit_points (or on the points themselves), seeded."""
    umap = import_optional("umap", "UMAP", "umap-learn", "leave out --umap for PCA")
    reducer = umap.UMAP(n_components=3, random_state=seed)
    if fit_points is None:
        return reducer.fit_transform(points)
    reducer.fit(fit_points)
    return reducer.transform(points)


def choose_highlight(words: Sequence[str], word: str | None = None, position: int | None = None) -> int:
    """Position to highlight: `position`, else the first token equal to `word`, else " one", else the last."""
    if position is not None:
        if not -len(words) <= position < len(words):
            raise InputError(f"position {position} is outside the text's {len(words)} tokens")
        return position % len(words)
    if word is not None:
        if word in words:
            return list(words).index(word)
        stripped = [w.strip() for w in words]  # "stone" also finds " stone"
        if word.strip() in stripped:
            return stripped.index(word.strip())
        raise InputError(f"the word {word!r} is not one of the text's tokens: {', '.join(map(repr, words))}")
    return words.index(PAPER_WORD) if PAPER_WORD in words else len(words) - 1


@torch.inference_mode()
def word_trajectory(
    model: GPT2,
    states: Tensor,
    words: Sequence[str],
    prediction_ids: Sequence[int],
    decode: Callable[[int], str],
    *,
    highlight: int | None = None,
    method: str = "pca",
    umap_fit: str = "vocab",
    seed: int = 0,
) -> Trajectory:
    """Project LN_f(x_l) of one sequence (states [L+1, T, d] or [L+1, 1, T, d]) to 3-D, see the module doc."""
    if states.dim() == 4:
        states = states[:, 0]
    n_states, T, d = states.shape
    highlight = len(words) - 1 if highlight is None else highlight
    prediction_id = int(prediction_ids[highlight])
    points = ln_f_points(model, states).reshape(n_states * T, d)  # [(L+1)·T, d], layer-major
    predictions = torch.as_tensor(list(prediction_ids), device=states.device)  # [T]
    targets = ln_f_points(model, model.wte.weight[predictions])  # [T, d], LN_f(e_pred) of every position
    if method == "pca":
        mean, components, explained = pca_basis(points)
        coords, target_coords, label = pca_project(points, mean, components), pca_project(targets, mean, components), "pca"
    elif method == "umap":
        explained = None
        both = torch.cat([points, targets]).double().cpu().numpy()
        if umap_fit == "vocab":
            vocab = ln_f_points(model, model.wte.weight[:UMAP_VOCAB_FIT]).double().cpu().numpy()
            projected = umap_project(both, vocab, seed)
        elif umap_fit == "points":
            projected = umap_project(both, None, seed)
        else:
            raise ValueError(f"umap_fit is 'vocab' or 'points', got {umap_fit!r}")
        coords, target_coords, label = projected[:-T], projected[-T:], f"umap (fit on {umap_fit})"
    else:
        raise ValueError(f"method is 'pca' or 'umap', got {method!r}")
    cosines = target_cosine(model, states, predictions)  # [L+1, T]
    return Trajectory(
        words=list(words), coords=np.asarray(coords, dtype=np.float64).reshape(n_states, T, 3), highlight=highlight,
        prediction_id=prediction_id, prediction_word=decode(prediction_id),
        prediction_coord=np.asarray(target_coords[highlight], dtype=np.float64), method=label,
        explained_variance=None if explained is None else explained.numpy(),
        target_cosine=cosines[:, highlight], prediction_coords=np.asarray(target_coords, dtype=np.float64),
        target_cosines=cosines,
        points=map_label(model.ln_f.variant, "f", "x_l"),
    )


def trajectory_rows(trajectory: Trajectory) -> list[dict]:
    """One record per (position, layer) with the 3-D coordinates, the predicted word's point last."""
    rows = [
        {"position": t, "token": word, "layer": layer, "x": float(x), "y": float(y), "z": float(z),
         "highlight": int(t == trajectory.highlight)}
        for t, word in enumerate(trajectory.words)
        for layer, (x, y, z) in enumerate(trajectory.coords[:, t])
    ]
    x, y, z = trajectory.prediction_coord
    rows.append({"position": -1, "token": trajectory.prediction_word, "layer": -1, "x": float(x), "y": float(y),
                 "z": float(z), "highlight": 0})
    return rows
