"""Layer normalization as a projection onto a sphere (Traveling Words, section 1).

    LN(x) = γ ⊙ (x − μ(x)·1) / σ(x) + β

is four steps, each one a piece of geometry on a d-dimensional row vector x:
  1. centre     x − μ·1 = (I − 11ᵀ/d) x      orthogonal projection onto the hyperplane H = {v : Σv = 0}
  2. normalise  (x − μ)/σ = √d (x − μ)/‖x − μ‖ a point on the sphere of radius √d inside H (ε aside)
  3. scale      γ ⊙ ·                        the sphere becomes an axis-aligned ellipsoid
  4. shift      + β                          the ellipsoid's centre moves

A *norm variant* is the projection (steps 1-2, or a replacement for them), whether steps 3-4 apply, and any
learned scalars the projection needs. Add your own with `register_norm("name", project_fn)`, then
`GPT2.from_pretrained(..., norm="name")`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputError

# (x [..., d], eps, **learned scalars) -> point [..., d]
Projection = Callable[..., Tensor]

# ---- the math -----------------------------------------------------------------------------------


def centre(x: Tensor) -> Tensor:
    """Step 1: x − μ(x)·1, the projection onto the hyperplane orthogonal to the all-ones vector."""
    return x - x.mean(dim=-1, keepdim=True)


def normalise(x: Tensor, eps: float) -> Tensor:
    """Step 2: x / sqrt(‖x‖²/d + ε) = √d · x/‖x‖ (up to ε): a point of the sphere of radius √d."""
    # One pass, no [..., d] temporary; in float32 even for half-precision x, whose ‖x‖² overflows past 256².
    squared_norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32).square()
    return x * torch.rsqrt(squared_norm / x.shape[-1] + eps).to(x.dtype)


def sphere_projection(x: Tensor, eps: float) -> Tensor:
    """Steps 1-2: centre then normalise: a point of the √d-sphere inside H (float32 statistics for half x).

    `F.layer_norm` without γ, β computes exactly `normalise(centre(x), eps)` in one fused kernel, with float32
    μ and σ for bfloat16 rows (tests check the two agree); it is the fast path, as SDPA is for attention. On CPU
    it is 5x faster for the one-position rows of generation and 2x for bfloat16, as fast for float32 prompts."""
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def rms_projection(x: Tensor, eps: float) -> Tensor:
    """RMSNorm's projection: normalise without centring, a √d-sphere not confined to H."""
    return normalise(x, eps)


def identity_projection(x: Tensor, eps: float) -> Tensor:
    """No normalisation at all: the block reads the raw residual stream."""
    return x


def dyt_projection(x: Tensor, eps: float, alpha: Tensor) -> Tensor:
    """Dynamic tanh (Zhu et al. 2025): tanh(α x) squashes each coordinate into (−1, 1), no statistics at all.

    Not a sphere: the point lies in the cube [−1, 1]^d; α, learned per site, sets how soon it saturates."""
    return torch.tanh(alpha * x)


def fixed_sigma_projection(x: Tensor, eps: float, sigma: Tensor) -> Tensor:
    """Centre, then divide by the site's calibrated σ instead of each token's own: a linear map (lnfree.py).

    σ is a constant measured over a corpus, not learned (the variant registers it with learned=False)."""
    return centre(x) / sigma


# ---- variants: a projection, the affine map or not, learned scalars ------------------------------


@dataclass(frozen=True)
class NormVariant:
    """A projection, whether the learned affine map γ ⊙ · + β follows it, and the scalars it learns.

    `parameters` maps a name to its initial value: each site gets its own scalar, passed to `project` as a
    keyword argument and saved in checkpoints as `<site>.<name>` (e.g. `h.0.ln_1.alpha`); training learns
    them unless `learned` is False (a calibrated constant, such as fixed σ)."""

    name: str
    project: Projection
    affine: bool = True
    parameters: Mapping[str, float] = field(default_factory=dict)
    learned: bool = True


NORM_VARIANTS: dict[str, NormVariant] = {}


def register_norm(name: str, project: Projection, *, affine: bool = True,
                  parameters: Mapping[str, float] | None = None, learned: bool = True) -> NormVariant:
    """Make `project` available as norm variant `name` (the only step needed to add one)."""
    if not callable(project):
        raise TypeError(f"norm variant {name!r}: project must be callable (x, eps, **parameters) -> Tensor")
    if name in BUILT_IN:
        raise InputError(f"norm variant {name!r} is built in and cannot be replaced; register it under another name")
    NORM_VARIANTS[name] = NormVariant(name, project, affine, dict(parameters or {}), learned)
    return NORM_VARIANTS[name]


BUILT_IN: frozenset[str] = frozenset()
register_norm("layernorm", sphere_projection)  # GPT-2's own
register_norm("rmsnorm", rms_projection)
register_norm("sphere", sphere_projection, affine=False)
register_norm("none", identity_projection, affine=False)
register_norm("dyt", dyt_projection, parameters={"alpha": 0.5})  # α₀ = 0.5, the DyT paper's default
register_norm("fixed_sigma", fixed_sigma_projection, parameters={"sigma": 1.0}, learned=False)  # lnfree calibrates σ
BUILT_IN = frozenset(NORM_VARIANTS)


def get_norm(name: str | NormVariant) -> NormVariant:
    """Look a variant up by name (a NormVariant passes through)."""
    if isinstance(name, NormVariant):
        return name
    try:
        return NORM_VARIANTS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown norm variant {name!r}; registered: {', '.join(NORM_VARIANTS)}") from None


NormSpec = Union[str, NormVariant, Mapping[str, Union[str, NormVariant]]]


def norm_for_site(spec: NormSpec, site: str) -> NormVariant:
    """The variant for site `h.3.ln_1` / `ln_f`: a mapping may name the exact site or its kind (`ln_1`)."""
    if isinstance(spec, (str, NormVariant)):
        return get_norm(spec)
    kind = site.rsplit(".", 1)[-1]
    return get_norm(spec.get(site, spec.get(kind, spec.get("default", "layernorm"))))


# ---- diagnostics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SphereDiagnostics:
    """Geometry of one layer-norm site; each field has the shape of x without its last axis ([B, T])."""

    input_norm: Tensor  # ‖x‖
    mean_component: Tensor  # x·1/√d = √d·μ(x): signed distance of x from the hyperplane H
    radius: Tensor  # ‖project(x)‖: √d for layernorm (up to ε)
    output_norm: Tensor  # ‖γ ⊙ project(x) + β‖, what the next linear map reads


def vector_norm(x: Tensor) -> Tensor:
    """‖x‖ over the last axis, in float32 whatever x's dtype (‖x‖² of float16 overflows past 256)."""
    return torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32)


def sphere_diagnostics(x: Tensor, point: Tensor, y: Tensor) -> SphereDiagnostics:
    """What one site did to x [B, T, d]: x's norm and offset from H, the projected point's radius, y's norm."""
    return SphereDiagnostics(
        input_norm=vector_norm(x),
        mean_component=x.sum(dim=-1, dtype=torch.float32) / math.sqrt(x.shape[-1]),  # Σx/√d = √d·μ
        radius=vector_norm(point),
        output_norm=vector_norm(y),
    )


# ---- the module -----------------------------------------------------------------------------------


class SphereNorm(nn.Module):
    """One layer-norm site: the learned γ (`weight`) and β (`bias`), the variant, and its own scalars."""

    def __init__(self, d: int, eps: float, variant: NormVariant) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))  # γ
        self.bias = nn.Parameter(torch.zeros(d))  # β
        self.eps = eps
        self.folded = False  # True once γ, β live in the next linear map (GPT2.fold_ln)
        self.variant = variant
        self.set_variant(variant)

    def forward(self, x: Tensor, trace: object = None) -> tuple[Tensor, SphereDiagnostics | None]:
        """x [B, T, d] -> (LN(x) [B, T, d], diagnostics when `trace` is set, else None)."""
        point = self.variant.project(x, self.eps, **{name: getattr(self, name) for name in self.variant.parameters})
        affine = self.variant.affine and not self.folded
        y = torch.addcmul(self.bias, point, self.weight) if affine else point  # steps 3-4: β + γ ⊙ point
        return y, (sphere_diagnostics(x, point, y) if trace else None)

    def set_variant(self, variant: NormVariant) -> None:
        """Use `variant` from now on: its learned scalars are created at their initial values, others dropped."""
        for name in self.variant.parameters:
            if name not in variant.parameters:
                delattr(self, name)
        for name, initial in variant.parameters.items():
            if not hasattr(self, name):
                value = torch.tensor(float(initial), dtype=self.weight.dtype, device=self.weight.device)
                self.register_parameter(name, nn.Parameter(value, requires_grad=variant.learned))
        self.variant = variant

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, variant={self.variant.name}, eps={self.eps}, folded={self.folded}"
