"""One norm site of the model (h.0.ln_1, …, ln_f): its variant's projection, then γ ⊙ · + β, and its diagnostics.

    y = γ ⊙ project(x) + β        (project alone for a variant without the affine map)
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from .editing import NO_SITE_EDITS, NoSiteEdits, SiteEdits
from .fused import FUSED, Kernels
from .sphere import sphere_projection, vector_norm
from .variants import NormVariant, Projection

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


def projection(variant: NormVariant, kernels: Kernels) -> Projection:
    """The variant's projection; layer norm's steps 1-2 (sphere_projection) as the kernel set computes them."""
    return kernels.sphere_projection if variant.project is sphere_projection else variant.project


# ---- the module -----------------------------------------------------------------------------------

Binding = tuple[NormVariant, dict[str, nn.Parameter]]  # a variant with its own scalars: replaced together
Bindings = Mapping[str, Binding]  # every site's, by site name: what one forward pass runs

SWAPS = threading.Lock()  # swaps take turns (two at once could interleave); a forward pass never takes it


class NormTable:
    """The variant and scalars of every norm site of one model, by site name: one dict, replaced whole.

    A model's sites share its table. A swap builds the new dict aside and assigns it in one step; a forward pass
    reads `bindings` once and hands it to every site (gpt2.py), so a pass in another thread runs the old variants
    at every site or the new ones at every site, never a mix, and never waits."""

    def __init__(self, bindings: dict[str, Binding]) -> None:
        self.bindings = bindings  # never changed in place: a pass may still be running the old dict

    @classmethod
    def join(cls, sites: Mapping[str, SphereNorm]) -> NormTable:
        """One table for all of `sites` (a model's, by name), each keeping the variant it has."""
        table = cls({name: site.binding() for name, site in sites.items()})
        for name, site in sites.items():
            site.table, site.site = table, name
        return table

    def swap(self, sites: Mapping[str, SphereNorm], variants: Mapping[str, NormVariant]) -> None:
        """Give each site `variants` names its variant, with the variant's scalars (the site's own if it has them,
        else new at their initial values), all in one step."""
        with SWAPS:
            changed = {name: sites[name].bind(variant) for name, variant in variants.items()}
            self.bindings = {**self.bindings, **changed}  # the one step a forward pass can see
            for name, binding in changed.items():
                sites[name].adopt(binding)


class SphereNorm(nn.Module):
    """One norm site: the learned γ (`weight`) and β (`bias`), and its variant with the variant's own scalars.

    The variant and its scalars live in the model's NormTable (a site alone has a table of its own), under the
    site's name, so that the model swaps every site's variant in one step."""

    def __init__(self, d: int, eps: float, variant: NormVariant) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))  # γ
        self.bias = nn.Parameter(torch.zeros(d))  # β
        self.eps = eps
        self.site = "site"  # its name in the table: h.0.ln_1, …, ln_f once a model joins its sites
        binding = self.bind(variant)
        self.table = NormTable({self.site: binding})
        self.adopt(binding)

    def binding(self, norms: Bindings | None = None) -> Binding:
        """(variant, scalars) of this site in `norms`, a forward pass's reading of the table; else the table's."""
        return (self.table.bindings if norms is None else norms)[self.site]

    @property
    def variant(self) -> NormVariant:
        """The norm variant this site runs."""
        return self.binding()[0]

    def forward(self, x: Tensor, trace: object = None, kernels: Kernels = FUSED,
                edits: SiteEdits | NoSiteEdits = NO_SITE_EDITS, norms: Bindings | None = None
                ) -> tuple[Tensor, SphereDiagnostics | None]:
        """x [B, T, d] -> (γ ⊙ project(x) + β [B, T, d], diagnostics when `trace` is set, else None); `norms` is
        the variants the model's pass runs (read once for every site), else the site's own."""
        variant, scalars = self.binding(norms)
        point = projection(variant, kernels)(x, self.eps, **scalars)
        point = edits.apply(point, x)  # an edit of the point, before γ, β (editing.py); the point itself without one
        y = torch.addcmul(self.bias, point, self.weight) if variant.affine else point  # steps 3-4: β + γ ⊙ point
        return y, (sphere_diagnostics(x, point, y) if trace else None)

    def project(self, x: Tensor) -> Tensor:
        """The variant's point for x [..., d], before γ and β: on its output set (geometry.Geometry)."""
        variant, scalars = self.binding()
        return variant.project(x, self.eps, **scalars)

    def affine_map(self) -> tuple[Tensor, Tensor]:
        """(γ, β) of the step after the projection; (1, 0) for a variant without one."""
        if self.variant.affine:
            return self.weight, self.bias
        return torch.ones_like(self.weight), torch.zeros_like(self.bias)

    def set_variant(self, variant: NormVariant) -> None:
        """Use `variant` from now on: its learned scalars are created at their initial values, others dropped."""
        self.table.swap({self.site: self}, {self.site: variant})

    def bind(self, variant: NormVariant) -> Binding:
        """`variant` with its scalars: this site's own where it has them, else new at their initial values (unset)."""
        scalars = {}
        for name, initial in variant.parameters.items():
            scalar = self._parameters.get(name)
            if scalar is None:
                value = torch.tensor(float(initial), dtype=self.weight.dtype, device=self.weight.device)
                scalar = nn.Parameter(value, requires_grad=variant.learned)
            scalars[name] = scalar
        return variant, scalars

    def adopt(self, binding: Binding) -> None:
        """Hold the binding's scalars as this module's parameters (`h.0.ln_1.alpha` in checkpoints), no others."""
        scalars = binding[1]
        for name in [name for name in self._parameters if name not in ("weight", "bias", *scalars)]:
            delattr(self, name)
        for name, scalar in scalars.items():
            self.register_parameter(name, scalar)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, variant={self.variant.name}, eps={self.eps}"
