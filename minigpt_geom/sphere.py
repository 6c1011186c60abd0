"""Layer normalization as a projection onto a sphere (Traveling Words, section 1).

    LN(x) = γ ⊙ (x − μ(x)·1) / σ(x) + β

is four steps, each one a piece of geometry on a d-dimensional row vector x:
  1. centre     x − μ·1 = (I − 11ᵀ/d) x      orthogonal projection onto the hyperplane H = {v : Σv = 0}
  2. normalise  (x − μ)/σ = √d (x − μ)/‖x − μ‖ a point on the sphere of radius √d inside H (ε aside)
  3. scale      γ ⊙ ·                        the sphere becomes an axis-aligned ellipsoid
  4. shift      + β                          the ellipsoid's centre moves

A *norm variant* is the projection (steps 1-2, or a replacement for them) plus whether steps 3-4 apply.
Register your own with `register_norm("name", project_fn)`; `GPT2.from_pretrained(..., norm="name")`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Union

import torch
from torch import Tensor, nn

from .errors import InputError

Projection = Callable[[Tensor, float], Tensor]  # (x [..., d], eps) -> point [..., d]


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


def identity_projection(x: Tensor, eps: float) -> Tensor:
    """No normalisation at all: the block reads the raw residual stream."""
    return x


@dataclass(frozen=True)
class NormVariant:
    """A projection and whether the learned affine map γ ⊙ · + β follows it."""

    name: str
    project: Projection
    affine: bool = True


NORM_VARIANTS: dict[str, NormVariant] = {}


def register_norm(name: str, project: Projection, *, affine: bool = True) -> NormVariant:
    """Make `project` available as norm variant `name` (the only step needed to add one)."""
    if not callable(project):
        raise TypeError(f"norm variant {name!r}: project must be callable (x, eps) -> Tensor")
    NORM_VARIANTS[name] = NormVariant(name, project, affine)
    return NORM_VARIANTS[name]


register_norm("layernorm", sphere_projection, affine=True)  # GPT-2's own
register_norm("rmsnorm", rms_projection, affine=True)
register_norm("sphere", sphere_projection, affine=False)
register_norm("none", identity_projection, affine=False)


def get_norm(name: str | NormVariant) -> NormVariant:
    """Look a variant up by name (a NormVariant passes through)."""
    if isinstance(name, NormVariant):
        return name
    try:
        return NORM_VARIANTS[name]
    except KeyError:
        raise InputError(f"unknown norm variant {name!r}; registered: {', '.join(NORM_VARIANTS)}") from None


NormSpec = Union[str, NormVariant, Mapping[str, Union[str, NormVariant]]]


def norm_for_site(spec: NormSpec, site: str) -> NormVariant:
    """The variant for site `h.3.ln_1` / `ln_f`: a mapping may name the exact site or its kind (`ln_1`)."""
    if isinstance(spec, (str, NormVariant)):
        return get_norm(spec)
    kind = site.rsplit(".", 1)[-1]
    return get_norm(spec.get(site, spec.get(kind, spec.get("default", "layernorm"))))


@dataclass(frozen=True)
class SphereDiagnostics:
    """Geometry of one layer-norm site; each field has the shape of x without its last axis ([B, T])."""

    input_norm: Tensor  # ‖x‖
    mean_component: Tensor  # x·1/√d = √d·μ(x): signed distance of x from the hyperplane H
    radius: Tensor  # ‖project(x)‖: √d for layernorm (up to ε)
    output_norm: Tensor  # ‖γ ⊙ project(x) + β‖, what the next linear map reads


class SphereNorm(nn.Module):
    """One layer-norm site: the learned γ (`weight`) and β (`bias`) plus the variant that uses them."""

    def __init__(self, d: int, eps: float, variant: NormVariant) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))  # γ
        self.bias = nn.Parameter(torch.zeros(d))  # β
        self.eps = eps
        self.variant = variant
        self.folded = False  # True once γ, β live in the next linear map (GPT2.fold_ln)

    def forward(self, x: Tensor, trace: bool = False) -> tuple[Tensor, SphereDiagnostics | None]:
        """x [B, T, d] -> (LN(x) [B, T, d], diagnostics or None)."""
        point = self.variant.project(x, self.eps)
        affine = self.variant.affine and not self.folded
        y = torch.addcmul(self.bias, point, self.weight) if affine else point  # steps 3-4: β + γ ⊙ point
        if not trace:
            return y, None
        d = x.shape[-1]
        diagnostics = SphereDiagnostics(
            input_norm=x.norm(dim=-1),
            mean_component=x.mean(dim=-1) * math.sqrt(d),
            radius=point.norm(dim=-1),
            output_norm=y.norm(dim=-1),
        )
        return y, diagnostics

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, variant={self.variant.name}, eps={self.eps}, folded={self.folded}"
