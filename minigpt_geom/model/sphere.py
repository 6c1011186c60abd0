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
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Union

import torch
from torch import Tensor, nn

from . import fused
from ..errors import InputError

# (x [..., d], eps, **learned scalars) -> point [..., d]
Projection = Callable[..., Tensor]

# ---- the math -----------------------------------------------------------------------------------


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
    if fused.enabled:  # the same two steps in one kernel (F.layer_norm without γ, β)
        return fused.layer_norm(x, eps)
    return normalise(centre(x), eps)


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


# ---- geometry: where each variant puts a point, and which direction of x it reads --------------------


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


UNDECLARED = Geometry("not declared by the variant", "‖project(x)‖")
SPHERE_IN_PLANE = Geometry("the sphere of radius √d in the hyperplane Σx = 0", "√d (ε aside)", centred_direction,
                           sphere_in_plane_support, True, r"\mathrm{LN}")

# ---- variants: a projection, the affine map or not, learned scalars, the geometry ----------------------


@dataclass(frozen=True)
class NormVariant:
    """A projection, whether the learned affine map γ ⊙ · + β follows it, the scalars it learns, its geometry.

    `parameters` maps a name to its initial value: each site gets its own scalar, passed to `project` as a
    keyword argument and saved in checkpoints as `<site>.<name>` (e.g. `h.0.ln_1.alpha`); training learns
    them unless `learned` is False (a calibrated constant, such as fixed σ)."""

    name: str
    project: Projection
    affine: bool = True
    parameters: Mapping[str, float] = field(default_factory=dict)
    learned: bool = True
    geometry: Geometry = UNDECLARED


NORM_VARIANTS: dict[str, NormVariant] = {}


def register_norm(name: str, project: Projection, *, affine: bool = True,
                  parameters: Mapping[str, float] | None = None, learned: bool = True,
                  geometry: Geometry = UNDECLARED) -> NormVariant:
    """Make `project` available as norm variant `name` (the only step needed to add one).

    `geometry` says where its outputs lie; undeclared, angles are taken between raw vectors and bounds that
    need a bounded set say they do not apply."""
    if not callable(project):
        raise TypeError(f"norm variant {name!r}: project must be callable (x, eps, **parameters) -> Tensor")
    if name in BUILT_IN:
        raise InputError(f"norm variant {name!r} is built in and cannot be replaced; register it under another name")
    if not isinstance(geometry, Geometry):
        raise TypeError(f"norm variant {name!r}: geometry must be a sphere.Geometry")
    NORM_VARIANTS[name] = NormVariant(name, project, affine, dict(parameters or {}), learned, geometry)
    return NORM_VARIANTS[name]


BUILT_IN: frozenset[str] = frozenset()
register_norm("layernorm", sphere_projection, geometry=SPHERE_IN_PLANE)  # GPT-2's own
register_norm("rmsnorm", rms_projection, geometry=Geometry(
    "the sphere of radius √d (not centred)", "√d (ε aside)", raw_direction, sphere_support, True, r"\mathrm{RMS}"))
register_norm("sphere", sphere_projection, affine=False, geometry=replace(SPHERE_IN_PLANE, symbol=r"\mathrm{S}"))
register_norm("none", identity_projection, affine=False, geometry=Geometry(
    "all of ℝ^d: no normalisation", "‖x‖", raw_direction, None, False, ""))
register_norm("dyt", dyt_projection, parameters={"alpha": 0.5}, geometry=Geometry(  # α₀ = 0.5, the DyT paper's
    "the open box (−1, 1)^d", "‖tanh(αx)‖ < √d", raw_direction, box_support, False, r"\mathrm{DyT}"))
register_norm("fixed_sigma", fixed_sigma_projection, parameters={"sigma": 1.0}, learned=False, geometry=Geometry(
    "no bounded set: a linear map (x − μ·1)/σ_s", "‖x − μ·1‖/σ_s", centred_direction, None, False,
    r"\mathrm{LN}^{\sigma}"))  # lnfree calibrates σ
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


def geometry_summary(variants: Mapping[str, NormVariant]) -> str:
    """One sentence on where a model's sites put their points, from {site: variant} (for captions)."""
    counts = Counter(variant.name for variant in variants.values())
    named = {variant.name: variant for variant in variants.values()}
    if len(counts) == 1:
        variant = next(iter(named.values()))
        return f"every site is {variant.name}: {variant.geometry.output_set}"
    return "; ".join(f"{name} ({n} sites): {named[name].geometry.output_set}" for name, n in counts.items())


def map_label(variant: NormVariant, site: str, x: str) -> str:
    """Mathtext for what a site makes of a state: $\\mathrm{LN}_f(x_l)$, or $x_l$ for no normalisation."""
    symbol = variant.geometry.symbol
    return f"${symbol}_{{{site}}}({x})$" if symbol else f"${x}$"


# ---- diagnostics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SphereDiagnostics:
    """Geometry of one norm site; each field has the shape of x without its last axis ([B, T]).

    The fields are measured the same way for every variant; what they mean is the variant's geometry
    (`NormVariant.geometry`): the radius is √d on layer norm's and RMSNorm's spheres, below √d in DyT's box,
    ‖x − μ·1‖/σ_s for fixed σ and ‖x‖ itself without normalisation."""

    input_norm: Tensor  # ‖x‖
    mean_component: Tensor  # x·1/√d = √d·μ(x): signed distance of x from the hyperplane H
    radius: Tensor  # ‖project(x)‖, the point before γ, β
    output_norm: Tensor  # ‖γ ⊙ project(x) + β‖, what the next linear map reads


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
    """One norm site: the learned γ (`weight`) and β (`bias`), the variant, and its own scalars.

    The variant and its scalars are bound together in one attribute, replaced in one step by `set_variant`,
    so a forward pass running in another thread sees the old pair or the new one, never half of each."""

    def __init__(self, d: int, eps: float, variant: NormVariant) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))  # γ
        self.bias = nn.Parameter(torch.zeros(d))  # β
        self.eps = eps
        self.bound: tuple[NormVariant, dict[str, nn.Parameter]] = (get_norm("none"), {})
        self.set_variant(variant)

    @property
    def variant(self) -> NormVariant:
        """The norm variant this site runs."""
        return self.bound[0]

    def forward(self, x: Tensor, trace: object = None) -> tuple[Tensor, SphereDiagnostics | None]:
        """x [B, T, d] -> (γ ⊙ project(x) + β [B, T, d], diagnostics when `trace` is set, else None)."""
        variant, scalars = self.bound  # one read: the pair a concurrent set_variant replaces whole
        point = variant.project(x, self.eps, **scalars)
        y = torch.addcmul(self.bias, point, self.weight) if variant.affine else point  # steps 3-4: β + γ ⊙ point
        return y, (sphere_diagnostics(x, point, y) if trace else None)

    def project(self, x: Tensor) -> Tensor:
        """The variant's point for x [..., d], before γ and β: on its output set (sphere.Geometry)."""
        variant, scalars = self.bound
        return variant.project(x, self.eps, **scalars)

    def affine_map(self) -> tuple[Tensor, Tensor]:
        """(γ, β) of the step after the projection; (1, 0) for a variant without one."""
        if self.variant.affine:
            return self.weight, self.bias
        return torch.ones_like(self.weight), torch.zeros_like(self.bias)

    def set_variant(self, variant: NormVariant) -> None:
        """Use `variant` from now on: its learned scalars are created at their initial values, others dropped."""
        scalars = {}
        for name, initial in variant.parameters.items():
            scalar = self._parameters.get(name)
            if scalar is None:
                value = torch.tensor(float(initial), dtype=self.weight.dtype, device=self.weight.device)
                scalar = nn.Parameter(value, requires_grad=variant.learned)
            scalars[name] = scalar
        old = self.bound[1]
        for name, scalar in scalars.items():
            self.register_parameter(name, scalar)
        self.bound = (variant, scalars)
        for name in old:
            if name not in scalars:
                delattr(self, name)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, variant={self.variant.name}, eps={self.eps}"
