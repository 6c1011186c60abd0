"""The residual update: one step of the word particle (Traveling Words, section 3).

    x_mid = x_l + attn_l(LN_1(x_l))          attention moves the word, reading its sphere point
    x_l+1 = x_mid + mlp_l(LN_2(x_mid))       the MLP moves it again, reading the new sphere point

In training with dropout p (dropout.py) each update is dropped out before it is added: x_l + dropout(attn_l(…)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AttentionDiagnostics, SelfAttention
from .dropout import dropout
from .editing import NO_EDITS, LayerEdits, NoEdits
from .fused import FUSED, Kernels
from .linear import Affine
from .norm_site import Bindings, SphereDiagnostics, SphereNorm
from .sphere import vector_norm
from .variants import NormVariant

if TYPE_CHECKING:
    from .cache import LayerCache
    from .trace_request import TraceRequest

# ---- the math -----------------------------------------------------------------------------------


def gelu(u: Tensor) -> Tensor:
    """GPT-2's tanh GELU: ½u(1 + tanh(√(2/π)(u + 0.044715u³)))."""
    return 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3)))


class MLP(nn.Module):
    """Position-wise map d -> 4d -> d with GPT-2's tanh GELU."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.c_fc = Affine(d, 4 * d)
        self.c_proj = Affine(4 * d, d)

    def forward(self, x_hat: Tensor, kernels: Kernels = FUSED) -> Tensor:
        """x̂ [B, T, d] -> [B, T, d]."""
        return self.c_proj(kernels.gelu(self.c_fc(x_hat)))


# ---- diagnostics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResidualDiagnostics:
    """The step x_l -> x_l+1 of each word; fields [B, T]."""

    residual_norm: Tensor  # ‖x_l‖, the block's input
    attention_update_norm: Tensor  # ‖attn_l(LN_1(x_l))‖
    mlp_update_norm: Tensor  # ‖mlp_l(LN_2(x_mid))‖
    cosine: Tensor  # cos between the directions of x_l and x_l+1 that the block's ln_1 reads
    angle: Tensor  # arccos(cosine), radians: the angular step (along the sphere, for layer norm)


def direction_cosine(a: Tensor, b: Tensor, direction: Callable[[Tensor], Tensor]) -> Tensor:
    """cos between direction(a) and direction(b) ([..., d] -> [...], float32). For layer norm the direction is
    the centred vector, so this is the angle between the sphere points (ε aside); for RMSNorm the raw vector."""
    return F.cosine_similarity(direction(a.float()), direction(b.float()), dim=-1).clamp(-1.0, 1.0)


def residual_diagnostics(x: Tensor, attention_update: Tensor, mlp_update: Tensor, x_next: Tensor,
                         direction: Callable[[Tensor], Tensor]) -> ResidualDiagnostics:
    """The sizes of a block's two updates and the angle its word turned through, in the variant's geometry."""
    cosine = direction_cosine(x, x_next, direction)
    return ResidualDiagnostics(vector_norm(x), vector_norm(attention_update), vector_norm(mlp_update),
                               cosine, torch.arccos(cosine))


@dataclass(frozen=True)
class BlockDiagnostics:
    """Everything one block reports: its two layer-norm sites, its attention and its residual step."""

    ln_1: SphereDiagnostics
    attention: AttentionDiagnostics
    ln_2: SphereDiagnostics
    residual: ResidualDiagnostics


# ---- the module -----------------------------------------------------------------------------------


class Block(nn.Module):
    """One transformer layer: two sphere projections, attention, MLP, two residual additions."""

    def __init__(self, d: int, n_head: int, eps: float, norms: tuple[NormVariant, NormVariant]) -> None:
        super().__init__()
        self.ln_1 = SphereNorm(d, eps, norms[0])
        self.attn = SelfAttention(d, n_head)
        self.ln_2 = SphereNorm(d, eps, norms[1])
        self.mlp = MLP(d)

    def forward(self, x: Tensor, trace: TraceRequest | None = None, cache: LayerCache | None = None,
                kernels: Kernels = FUSED, edits: LayerEdits | NoEdits = NO_EDITS, norms: Bindings | None = None,
                dropout_p: float = 0.0) -> tuple[Tensor, BlockDiagnostics | None]:
        """x_l [B, T, d] -> (x_l+1, diagnostics when tracing, else None), with the given kernel set and norm
        variants (the model's pass reads them once: gpt2.py); each step's value passes through `edits.apply`
        (itself when nothing edits or keeps that site: editing.py). `dropout_p`: GPT-2's dropout of the attention
        weights and of both updates (training mode only, else 0)."""
        x = edits.apply("resid_pre", x)
        x_hat, ln_1 = self.ln_1(x, trace, kernels, edits.site("ln_1"), norms)
        attention_update, attention = self.attn(x_hat, trace, cache, kernels, edits, dropout_p)
        attention_update = edits.apply("attn_out", attention_update)
        x_mid = edits.apply("resid_mid", x + dropout(attention_update, dropout_p))  # resid_pdrop
        x_hat, ln_2 = self.ln_2(x_mid, trace, kernels, edits.site("ln_2"), norms)
        mlp_update = edits.apply("mlp_out", self.mlp(x_hat, kernels))
        x_next = edits.apply("resid_post", x_mid + dropout(mlp_update, dropout_p))  # resid_pdrop
        if trace is None:
            return x_next, None
        variant = self.ln_1.binding(norms)[0]
        residual = residual_diagnostics(x, attention_update, mlp_update, x_next, variant.geometry.direction)
        return x_next, BlockDiagnostics(ln_1, attention, ln_2, residual)
