"""Edits as data: move a word at one of the forward pass's own steps, with no hooks.

    logits = model(idx, edits=[Add("resid_pre", layer=6, vector=v, coefficient=4.0)])   # steering
    logits, trace = model(idx, trace=True, edits=[...])       # trace.edits: what each edit moved, and by how much

An edit names a place the way the trace does, then says what to do there. Every edit is checked before the
forward pass runs (one InputError naming the field), and an edit that would change nothing it was asked to
change (scale by 1, add a zero vector, rotate by 0) is refused, never silently kept.

The place
---------
`site` (below), `layer` (0 … L−1; None for ln_f), and which entries of the site's value: `rows` (batch rows),
`positions` (sequence positions, counted from the start of the sequence, so with a KV cache they are the new
positions: editing one already held in the cache is refused) and `head` (head sites only). Each is None (all),
an int, or a 1-D sequence or tensor of ints. The edit touches `value[rows, positions, head]` of the site's value
laid out [B, T, (H,) ...] below, under PyTorch's indexing rules: None acts as `:`, and index sequences given
together are paired element by element, as in `x[rows, positions]`. So one edit can target many (row,
position) pairs at once, each with its own value:

    # activation patching, 12 layers × 16 positions as ONE pass of 192 copies: copy 16·l + p patches (l, p)
    _, clean_trace = model(clean, trace=TraceRequest(capture=("resid_pre",)))
    copies = torch.arange(192).view(12, 16)
    edits = [Set("resid_pre", layer=l, rows=copies[l], positions=torch.arange(16), source=clean_trace)
             for l in range(12)]
    logits = model(corrupt.expand(192, -1), edits=edits)       # logits[16·l + p]: (l, p) patched

Sites (shapes as the edit indexes them; `TraceRequest(capture=(...))` keeps the same layout, stacked by layer
as trace.captured[site] [L, B, T, ...], ln_f without the layer axis):

    resid_pre    x_l, the residual stream entering block l                       [B, T, d]
    ln_1         block l's first norm site: its point project(x_l), before γ, β   [B, T, d]
    pattern      attention weights a_ij (query i = the position, key j last)     [B, T, H, S]
    head_out     each head's output Σ_j a_ij v_j, before W_O                     [B, T, H, d_head]
    head_write   each head's write into the residual, head_out_h · W_O^h (no b_O) [B, T, H, d]
    attn_out     the attention update Σ_h head_write_h + b_O                     [B, T, d]
    resid_mid    x_l + attn_out, between attention and MLP                       [B, T, d]
    ln_2         block l's second norm site's point, before γ, β                 [B, T, d]
    mlp_out      the MLP's update                                                [B, T, d]
    resid_post   x_l+1 = resid_mid + mlp_out                                     [B, T, d]
    ln_f         the final norm site's point, before γ, β (layer=None)           [B, T, d]

The operations
--------------
    Set(site, value=t)                 the place becomes t (broadcast to the place's shape)
    Set(site, source=trace)            patching: the same place's value in another run (its trace captured the
                                       site; a one-row source serves every row)
    Add(site, vector=v, coefficient=c) steering: + c·v
    Scale(site, factor=s)              · s
    Ablate(site)                       zero; how="mean": the reference run's mean over its rows (per position);
                                       how="resample": a reference run's row drawn at random (seeded) for each row
    Rotate(site, angle=θ, toward=u)    a norm site's point turned by θ radians toward u (or toward the point of
                                       another position, toward_position=j), in the plane of the two, its
                                       radius kept: it stays on the site's sphere. Refused where the site's
                                       variant puts points on no sphere (geometry.Geometry.sphere)
    FreezeScale(site, reference=trace) a norm site's scale held at the reference run's: point = direction(x)·s_ref
                                       with s = ‖project(x)‖/‖direction(x)‖, making the site linear in x (the
                                       linearisation behind direct logit attribution). The reference run
                                       captures the site's input (resid_pre for ln_1, resid_mid for ln_2,
                                       resid_post of the last block for ln_f; the trace's states serve too).

An attention-pattern edit needs the pattern itself: in that layer both kernel sets compute it explicitly (the
fused kernel never forms it), so both give the same edited result. Edits are applied in order of the steps,
and in the order given at one site.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, Sequence, Union

from torch import Tensor

# None (all), one index, or several (paired with the other axes' indices, as tensor indexing pairs them)
Index = Union[int, Sequence[int], Tensor, None]

# site -> its value's axes as an edit indexes it (what each site is: the module docstring)
SITES: dict[str, str] = {
    "resid_pre": "[B, T, d]",
    "ln_1": "[B, T, d]",
    "pattern": "[B, T, H, S]",
    "head_out": "[B, T, H, d_head]",
    "head_write": "[B, T, H, d]",
    "attn_out": "[B, T, d]",
    "resid_mid": "[B, T, d]",
    "ln_2": "[B, T, d]",
    "mlp_out": "[B, T, d]",
    "resid_post": "[B, T, d]",
    "ln_f": "[B, T, d]",
}
NORM_SITES = ("ln_1", "ln_2", "ln_f")
HEAD_SITES = ("pattern", "head_out", "head_write")  # the sites with a head axis


@dataclass(frozen=True, eq=False)
class Edit:
    """A place in the forward pass (see the module docstring); each operation below adds what to do there."""

    site: str
    _: KW_ONLY
    layer: int | None = None
    positions: Index = None
    rows: Index = None
    head: Index = None


@dataclass(frozen=True, eq=False, kw_only=True)
class Set(Edit):
    """The place becomes `value` (broadcast to its shape), or the same place's value in `source`, another run's
    trace (or its `.captured`) that captured this site: activation patching."""

    value: Tensor | None = None
    source: Any = None  # a Trace, or a trace's Captured


@dataclass(frozen=True, eq=False, kw_only=True)
class Add(Edit):
    """value + coefficient · vector (the vector broadcast to the place's shape): steering."""

    vector: Tensor
    coefficient: float = 1.0


@dataclass(frozen=True, eq=False, kw_only=True)
class Scale(Edit):
    """value · factor."""

    factor: float


ABLATIONS = ("zero", "mean", "resample")


@dataclass(frozen=True, eq=False, kw_only=True)
class Ablate(Edit):
    """The place zeroed (how="zero"), set to the `reference` run's mean over its rows at each position
    (how="mean"), or to a reference row drawn at random for each row, by `seed` (how="resample")."""

    how: str = "zero"
    reference: Any = None  # a Trace (or Captured) that captured this site, for "mean" and "resample"
    seed: int = 0


@dataclass(frozen=True, eq=False, kw_only=True)
class Rotate(Edit):
    """A norm site's point turned by `angle` radians toward `toward` (a vector [d], or one per place), or toward
    the point of position `toward_position` in the same row: in the plane of the point and the target's
    direction (the variant's own, geometry.Geometry.direction), its radius kept."""

    angle: float
    toward: Tensor | None = None
    toward_position: int | None = None


@dataclass(frozen=True, eq=False, kw_only=True)
class FreezeScale(Edit):
    """A norm site's scale s = ‖project(x)‖/‖direction(x)‖ held at the `reference` run's value, per row and
    position: point = direction(x) · s_ref, linear in x."""

    reference: Any  # a Trace (or Captured) holding the site's input (see the module docstring)


OPERATIONS = (Set, Add, Scale, Ablate, Rotate, FreezeScale)
