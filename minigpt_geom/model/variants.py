"""Norm variants: a projection, whether the affine map γ ⊙ · + β follows it, its learned scalars, its geometry.

Built in: layernorm (GPT-2's: centre, normalise), rmsnorm (normalise only), sphere (layer norm without γ, β),
none (the identity: no normalisation), dyt (tanh(αx), a box, not a sphere) and fixed_sigma (centre, then a
calibrated constant σ: a linear map). Add your own with `register_norm("name", project_fn)`, then
`GPT2.from_pretrained(..., norm="name")`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence, Union

import torch
from torch import Tensor

from ..errors import InputError
from .geometry import SPHERE, SPHERE_IN_PLANE, UNDECLARED, Geometry, box_support, centred_direction, raw_direction
from .sphere import centre, rms_projection, sphere_projection

# (x [..., d], eps, **learned scalars) -> point [..., d]
Projection = Callable[..., Tensor]

# ---- the projections that are not a sphere -----------------------------------------------------------


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


# ---- the registry ------------------------------------------------------------------------------------


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
        raise TypeError(f"norm variant {name!r}: geometry must be a geometry.Geometry")
    NORM_VARIANTS[name] = NormVariant(name, project, affine, dict(parameters or {}), learned, geometry)
    return NORM_VARIANTS[name]


BUILT_IN: frozenset[str] = frozenset()
register_norm("layernorm", sphere_projection, geometry=SPHERE_IN_PLANE)  # GPT-2's own
register_norm("rmsnorm", rms_projection, geometry=SPHERE)
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


def site_kind(site: str) -> str:
    """ln_1, ln_2 or ln_f: the kind of site `h.3.ln_1` / `ln_f`."""
    return site.rsplit(".", 1)[-1]


def norm_for_site(spec: NormSpec, site: str) -> NormVariant:
    """The variant for site `h.3.ln_1` / `ln_f`: a mapping may name the exact site or its kind (`ln_1`)."""
    if isinstance(spec, (str, NormVariant)):
        return get_norm(spec)
    return get_norm(spec.get(site, spec.get(site_kind(site), spec.get("default", "layernorm"))))


def check_norm_spec(spec: NormSpec, sites: Sequence[str]) -> None:
    """InputError unless `spec` is a variant or a {key: variant} mapping whose every key is one of `sites` (a
    model's, in forward order: h.0.ln_1 … ln_f), a kind (ln_1, ln_2, ln_f) or `default`, naming the keys at fault."""
    if isinstance(spec, (str, NormVariant)):
        get_norm(spec)
        return
    if not isinstance(spec, Mapping):
        raise InputError(f"norm must be a variant name or a mapping {{site: variant}}, got {type(spec).__name__}")
    kinds = {site_kind(site) for site in sites}
    unknown = [repr(key) for key in spec if key not in sites and key not in kinds and key != "default"]
    if unknown:
        layers = (len(sites) - 1) // 2
        named = unknown[0] if len(unknown) == 1 else f"{', '.join(unknown[:-1])} and {unknown[-1]}"
        raise InputError(f"the norm mapping names {named}, which {'is no site' if len(unknown) == 1 else 'are no sites'}"
                         f" of this {layers}-layer model: name a site (h.N.ln_1 or h.N.ln_2 for N = 0"
                         f"{f' … {layers - 1}' if layers > 1 else ''}, or ln_f), a kind "
                         f"({', '.join(sorted(kinds))}) or default")
    for variant in spec.values():
        get_norm(variant)


def assigned_norms(spec: NormSpec, sites: Sequence[str]) -> dict[str, NormVariant]:
    """{site: variant} for the sites `spec` assigns: all of them for a variant or a mapping with `default`, else
    those a mapping names by site or kind; InputError (check_norm_spec) before any is looked at."""
    check_norm_spec(spec, sites)
    if isinstance(spec, Mapping) and "default" not in spec:
        sites = [site for site in sites if site in spec or site_kind(site) in spec]
    return {site: norm_for_site(spec, site) for site in sites}


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
