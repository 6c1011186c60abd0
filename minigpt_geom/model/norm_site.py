"""One norm site of the model (h.0.ln_1, …, ln_f): its variant's projection, then γ ⊙ · + β, and its diagnostics.

    y = γ ⊙ project(x) + β        (project alone for a variant without the affine map)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .editing import NO_SITE_EDITS, NoSiteEdits, SiteEdits
from .fused import FUSED, Kernels
from .sphere import sphere_projection, vector_norm
from .variants import NormVariant, Projection, get_norm

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

    def forward(self, x: Tensor, trace: object = None, kernels: Kernels = FUSED,
                edits: SiteEdits | NoSiteEdits = NO_SITE_EDITS) -> tuple[Tensor, SphereDiagnostics | None]:
        """x [B, T, d] -> (γ ⊙ project(x) + β [B, T, d], diagnostics when `trace` is set, else None)."""
        variant, scalars = self.bound  # one read: the pair a concurrent set_variant replaces whole
        point = projection(variant, kernels)(x, self.eps, **scalars)
        point = edits.apply(point, x)  # an edit of the point, before γ, β (editing.py); the point itself without one
        y = torch.addcmul(self.bias, point, self.weight) if variant.affine else point  # steps 3-4: β + γ ⊙ point
        return y, (sphere_diagnostics(x, point, y) if trace else None)

    def project(self, x: Tensor) -> Tensor:
        """The variant's point for x [..., d], before γ and β: on its output set (geometry.Geometry)."""
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
