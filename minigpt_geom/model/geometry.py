"""Where a norm variant puts a point, and which direction of x it reads: the geometry each analysis asks for.

A variant's projection sends x ∈ ℝ^d to a set (layer norm: the √d-sphere inside the hyperplane Σx = 0;
RMSNorm: the √d-sphere; DyT: the box (−1, 1)^d; none: all of ℝ^d). `Geometry` names that set, the direction
of x the projection reads (angles are measured between such directions) and its support function (the largest
logit a point of the set can reach along a row a).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .sphere import centre, vector_norm


def centred_direction(x: Tensor) -> Tensor:
    """The direction layer norm reads: x − μ·1 (x's component in H)."""
    return centre(x)


def raw_direction(x: Tensor) -> Tensor:
    """The direction RMSNorm reads, and the only one a map without statistics has: x itself."""
    return x


def sphere_in_plane_support(a: Tensor) -> Tensor:
    """sup of p·a over the √d-sphere inside H: √d‖centre(a)‖ (p = √d centre(a)/‖centre(a)‖ attains it)."""
    return math.sqrt(a.shape[-1]) * vector_norm(centre(a))


def sphere_support(a: Tensor) -> Tensor:
    """sup of p·a over the √d-sphere: √d‖a‖."""
    return math.sqrt(a.shape[-1]) * vector_norm(a)


def box_support(a: Tensor) -> Tensor:
    """sup of p·a over the open box (−1, 1)^d: ‖a‖₁, approached as p → sign(a), never reached."""
    return torch.linalg.vector_norm(a, ord=1, dim=-1, dtype=torch.float32)


@dataclass(frozen=True)
class Geometry:
    """What a variant's projection does to a point x ∈ ℝ^d, before the affine step γ ⊙ · + β.

    `direction` is the part of x the projection reads: the angle a word turns through at a block is measured
    between the directions of x_l and x_l+1. `support(a)` = sup over the output set of p·a, for rows a
    [..., d] (the most a logit p·a can be), or None when the set is unbounded."""

    output_set: str  # where project(x) lies, in words
    radius: str  # what ‖project(x)‖ is on this set
    direction: Callable[[Tensor], Tensor] = raw_direction
    support: Callable[[Tensor], Tensor] | None = None
    scale_free: bool = False  # True when project(s·x) = project(x) for s > 0 (ε aside): only the direction counts
    symbol: str = r"\mathrm{N}"  # mathtext name of the map, as in $\mathrm{LN}_f(x_l)$; "" for the identity
    sphere: bool = False  # True when every point lies on a sphere about 0: a rotation of a point keeps it on the set


UNDECLARED = Geometry("not declared by the variant", "‖project(x)‖")
SPHERE_IN_PLANE = Geometry("the sphere of radius √d in the hyperplane Σx = 0", "√d (ε aside)", centred_direction,
                           sphere_in_plane_support, True, r"\mathrm{LN}", sphere=True)
SPHERE = Geometry("the sphere of radius √d (not centred)", "√d (ε aside)", raw_direction, sphere_support, True,
                  r"\mathrm{RMS}", sphere=True)
