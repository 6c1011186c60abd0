"""Layer normalization as a projection onto a sphere (Traveling Words, section 1).

    LN(x) = γ ⊙ (x − μ(x)·1) / σ(x) + β

is four steps, each one a piece of geometry on a d-dimensional row vector x:
  1. centre     x − μ·1 = (I − 11ᵀ/d) x      orthogonal projection onto the hyperplane H = {v : Σv = 0}
  2. normalise  (x − μ)/σ = √d (x − μ)/‖x − μ‖ a point on the sphere of radius √d inside H (ε aside)
  3. scale      γ ⊙ ·                        the sphere becomes an axis-aligned ellipsoid
  4. shift      + β                          the ellipsoid's centre moves

This file holds steps 1-2 and RMSNorm's sphere; the other projections (none, DyT's box, fixed σ) and the
registry of norm variants are in variants.py, what each puts a point on in geometry.py, and the norm site that
applies steps 3-4 in norm_site.py.
"""

from __future__ import annotations

import torch
from torch import Tensor


def vector_norm(x: Tensor) -> Tensor:
    """‖x‖ over the last axis, in float32 whatever x's dtype (‖x‖² of float16 overflows past 256)."""
    return torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32)


def centre(x: Tensor) -> Tensor:
    """Step 1: x − μ(x)·1, the projection onto the hyperplane orthogonal to the all-ones vector."""
    return x - x.mean(dim=-1, keepdim=True)


def normalise(x: Tensor, eps: float) -> Tensor:
    """Step 2: x / sqrt(‖x‖²/d + ε) = √d · x/‖x‖ (up to ε): a point of the sphere of radius √d."""
    # One pass, no [..., d] temporary; in float32 even for half-precision x, whose ‖x‖² overflows past 256².
    squared_norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32).square()
    return x * torch.rsqrt(squared_norm / x.shape[-1] + eps).to(x.dtype)


def sphere_projection(x: Tensor, eps: float) -> Tensor:
    """Steps 1-2: centre then normalise: a point of the √d-sphere inside H."""
    return normalise(centre(x), eps)


def rms_projection(x: Tensor, eps: float) -> Tensor:
    """RMSNorm's projection: normalise without centring, a √d-sphere not confined to H."""
    return normalise(x, eps)
