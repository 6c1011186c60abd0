"""How edits (edits.py) are checked and applied: one plan per forward pass, one line at each step of the math.

`check_edits` reads every edit against the model and the input before anything runs, and gives one InputError
naming the field at fault; what it returns is the plan the forward pass hands to each block as it hands the
kernel set, `plan.layer(i)`. Each step of the reference code passes its value through that handle:

    x = edits.apply("resid_pre", x)        # the value itself when nothing edits or captures the site

With no edit and no capture the handle is NO_EDITS, whose `apply` returns its argument: the unedited forward
pass pays a method call per step, nothing more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import Tensor

from ..config import site_name
from ..errors import InputError
from .edits import (ABLATIONS, HEAD_SITES, NORM_SITES, OPERATIONS, SITES, Ablate, Add, Edit, FreezeScale, Rotate,
                    Scale, Set)
from .sphere import vector_norm

if TYPE_CHECKING:
    from torch import nn

# ---- what a traced run keeps and reports --------------------------------------------------------------


@dataclass(frozen=True)
class Captured:
    """Values a run kept at the sites TraceRequest.capture named, in the layout an edit indexes (edits.SITES):
    values[site] [L, B, T, ...] stacked by layer (ln_f: [B, T, d]); `start` is the position of column 0 (a run
    with a KV cache sees only its new positions)."""

    values: dict[str, Tensor]
    start: int = 0

    def __getitem__(self, site: str) -> Tensor:
        return self.values[site]


@dataclass(frozen=True)
class AppliedEdit:
    """One edit as a traced run applied it; `change` is ‖new − old‖ over the last axis at each place it touched
    (float32, the shape of the place without its last axis): how far the edit moved the site."""

    edit: Edit
    change: Tensor


# ---- one checked edit, ready to apply -----------------------------------------------------------------

# (the place's old values, the site's whole value [B, T, (H,) ...], the norm site's input x or None) -> new values
Operate = Callable[[Tensor, Tensor, Tensor | None], Tensor]


@dataclass(frozen=True)
class Step:
    """An edit checked against one forward pass: where it reads and writes (an index into the site's value in
    edits.SITES' layout) and what it computes there."""

    edit: Edit
    index: tuple
    operate: Operate

    @property
    def copies(self) -> bool:
        """True when value[index] is a copy (an index tensor), not a view."""
        return any(isinstance(i, Tensor) for i in self.index)


class Plan:
    """The edits and captures of one forward pass, by layer and site; it collects the captures and the report."""

    def __init__(self, steps: dict[tuple[int | None, str], list[Step]], capture: frozenset[str], report: bool,
                 start: int) -> None:
        self.steps, self.capture, self.report, self.start = steps, capture, report, start
        self.kept: dict[str, list[Tensor]] = {site: [] for site in capture}
        self.applied: list[AppliedEdit] = []

    def layer(self, index: int | None) -> "LayerEdits":
        """The handle block `index` (None: ln_f) applies its sites' edits through."""
        return LayerEdits(self, index)

    def captured(self) -> Captured | None:
        """What the pass kept, stacked by layer (ln_f unstacked), or None if nothing was asked for."""
        if not self.capture:
            return None
        return Captured({site: values[0] if site == "ln_f" else torch.stack(values)
                         for site, values in self.kept.items()}, self.start)


class LayerEdits:
    """One layer's (or ln_f's) edits and captures: `value = edits.apply(site, value)` at each step."""

    def __init__(self, plan: Plan, layer: int | None) -> None:
        self.plan, self.layer = plan, layer

    def touches(self, site: str) -> bool:
        """True when the site's value must exist: an edit changes it or the trace keeps it."""
        return (self.layer, site) in self.plan.steps or site in self.plan.capture

    def apply(self, site: str, value: Tensor, x: Tensor | None = None) -> Tensor:
        """The site's value after this layer's edits there, kept if the trace captures the site; `x` is a norm
        site's input (FreezeScale and the point's direction need it)."""
        steps = self.plan.steps.get((self.layer, site))
        if steps:
            value = edited(site, value, x, steps, self.plan.applied if self.plan.report else None)
        if site in self.plan.capture:
            self.plan.kept[site].append(value.transpose(1, 2) if site in HEAD_SITES else value)
        return value

    def site(self, site: str) -> "SiteEdits":
        """The handle bound to one norm site, for the SphereNorm module that runs it."""
        return SiteEdits(self, site)


@dataclass(frozen=True)
class SiteEdits:
    """A LayerEdits bound to one site: a norm site's module calls `point = edits.apply(point, x)`."""

    layer: LayerEdits
    site: str

    def apply(self, value: Tensor, x: Tensor | None = None) -> Tensor:
        return self.layer.apply(self.site, value, x)


class NoSiteEdits:
    """A norm site's handle when nothing edits or captures it: the point passes through untouched."""

    def apply(self, value: Tensor, x: Tensor | None = None) -> Tensor:
        return value


NO_SITE_EDITS = NoSiteEdits()


class NoEdits:
    """The plan, and every layer's handle, of a pass with no edit and no capture: values pass through untouched."""

    applied: tuple[AppliedEdit, ...] = ()

    def layer(self, index: int | None) -> "NoEdits":
        return self

    def captured(self) -> None:
        return None

    def touches(self, site: str) -> bool:
        return False

    def apply(self, site: str, value: Tensor, x: Tensor | None = None) -> Tensor:
        return value

    def site(self, site: str) -> NoSiteEdits:
        return NO_SITE_EDITS


NO_EDITS = NoEdits()


def edited(site: str, value: Tensor, x: Tensor | None, steps: Sequence[Step],
           applied: list[AppliedEdit] | None) -> Tensor:
    """value after each step in turn, written into a copy with one vectorised index_put per step."""
    heads = site in HEAD_SITES
    out = (value.transpose(1, 2) if heads else value).clone()  # [B, T, (H,) ...]: the layout edits index
    for step in steps:
        old = out[step.index]  # a copy under an index tensor, a view of `out` otherwise
        old = old if step.copies else old.clone()
        new = step.operate(old, out, x)
        out[step.index] = new
        if applied is not None:
            applied.append(AppliedEdit(step.edit, vector_norm(new.broadcast_to(old.shape) - old)))
    return out.transpose(1, 2) if heads else out


# ---- checking: everything before the forward pass -----------------------------------------------------


def check_edits(model: nn.Module, edits: Sequence[Edit] | None, batch: int, length: int, start: int = 0,
                capture: Sequence[str] = (), report: bool = False) -> Plan | NoEdits:
    """The plan for a pass over `length` new positions after `start` cached ones, `batch` rows; InputError
    naming the first edit and field at fault."""
    if edits is None:
        edits = ()
    if isinstance(edits, Edit) or not isinstance(edits, (list, tuple)):
        raise InputError(f"edits must be a list or tuple of edits (edits.py), got {type(edits).__name__}")
    if not edits and not capture:
        return NO_EDITS
    steps: dict[tuple[int | None, str], list[Step]] = {}
    shape = Shape(model, batch, length, start)
    for n, edit in enumerate(edits):
        step = check_edit(model, edit, shape, f"edits[{n}]")
        steps.setdefault((edit.layer, edit.site), []).append(step)
    return Plan(steps, frozenset(capture), report, start)


@dataclass(frozen=True)
class Shape:
    """The model's and the pass's sizes an edit is checked against."""

    model: Any
    batch: int
    length: int
    start: int

    @property
    def end(self) -> int:
        return self.start + self.length

    def features(self, site: str) -> tuple[int, ...]:
        """The site's trailing axes after [B, T, (H,)]."""
        config = self.model.config
        return {"pattern": (self.end,), "head_out": (config.n_embd // config.n_head,)}.get(site, (config.n_embd,))

    def leading(self, site: str) -> tuple[int, ...]:
        """[B, T] or [B, T, H]."""
        return (self.batch, self.length) + ((self.model.config.n_head,) if site in HEAD_SITES else ())


def check_edit(model: nn.Module, edit: Edit, shape: Shape, name: str) -> Step:
    """One edit checked against the model and the pass; its Step."""
    if not isinstance(edit, OPERATIONS):
        kind = "an Edit with no operation" if isinstance(edit, Edit) else type(edit).__name__
        raise InputError(f"{name} is {kind}, not one of {', '.join(op.__name__ for op in OPERATIONS)}")
    name = f"{name} ({type(edit).__name__})"
    if edit.site not in SITES:
        raise InputError(f"{name}.site: unknown site {edit.site!r}; sites: {', '.join(SITES)}")
    check_layer(edit, shape, name)
    index = place_index(edit, shape, name)
    selected = selection_shape(edit, index, shape, name)
    check = CHECKS[type(edit)]
    operate = check(model, edit, shape, index, selected, name)
    return Step(edit, index, operate)


def check_layer(edit: Edit, shape: Shape, name: str) -> None:
    """layer in range for a block's site, None for ln_f; head only at head sites."""
    n_layer = shape.model.config.n_layer
    if edit.site == "ln_f":
        if edit.layer is not None:
            raise InputError(f"{name}.layer: ln_f follows the last block and has no layer; leave layer=None")
    elif not isinstance(edit.layer, int) or isinstance(edit.layer, bool) or not 0 <= edit.layer < n_layer:
        raise InputError(f"{name}.layer: site {edit.site!r} needs a layer 0 … {n_layer - 1}, got {edit.layer!r}")
    if edit.head is not None and edit.site not in HEAD_SITES:
        raise InputError(f"{name}.head: site {edit.site!r} has no head axis; heads are at {', '.join(HEAD_SITES)}")


def as_ints(value: Any, field_name: str, name: str) -> Tensor:
    """An int or a 1-D sequence or tensor of ints as a 1-D int64 CPU tensor; InputError otherwise."""
    problem = f"{name}.{field_name}: expected an int or a 1-D sequence of ints, got "
    if isinstance(value, bool):
        raise InputError(problem + "a bool")
    try:
        ints = torch.as_tensor(value).reshape(-1) if isinstance(value, int) else torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(problem + type(value).__name__) from None
    if ints.is_floating_point() or ints.is_complex() or ints.dtype == torch.bool or ints.dim() > 1:
        raise InputError(problem + (f"{ints.dim()} axes" if ints.dim() > 1 else f"dtype {ints.dtype}"))
    if ints.numel() == 0:
        raise InputError(f"{name}.{field_name}: an empty selection would edit nothing")
    return ints.long().cpu()


def as_index(value: Any, field_name: str, low: int, high: int, name: str, where: str) -> Any:
    """None -> slice(None); an int or 1-D ints in [low, high) -> the same minus `low`; else InputError."""
    if value is None:
        return slice(None)
    ints = as_ints(value, field_name, name)
    bad = ints[(ints < low) | (ints >= high)]
    if bad.numel():
        raise InputError(f"{name}.{field_name}: {int(bad[0])} is out of range: {where}")
    return int(value) - low if isinstance(value, int) else ints - low


def place_index(edit: Edit, shape: Shape, name: str) -> tuple:
    """(rows, positions[, head]) as an index into the site's value, positions made relative to the pass."""
    start, end = shape.start, shape.end
    if start and edit.positions is not None:
        held = as_ints(edit.positions, "positions", name)
        held = held[(held >= 0) & (held < start)]
        if held.numel():
            raise InputError(f"{name}.positions: position {int(held[0])} is already held in the KV cache (positions "
                             f"0 … {start - 1}); only the new positions {start} … {end - 1} can be edited")
    rows = as_index(edit.rows, "rows", 0, shape.batch, name, f"the batch has rows 0 … {shape.batch - 1}")
    positions = as_index(edit.positions, "positions", start, end, name,
                         f"this pass computes positions {start} … {end - 1}")
    index = (rows, positions)
    if edit.site in HEAD_SITES:
        n_head = shape.model.config.n_head
        index += (as_index(edit.head, "head", 0, n_head, name, f"the model has heads 0 … {n_head - 1}"),)
    return index


def selection_shape(edit: Edit, index: tuple, shape: Shape, name: str) -> torch.Size:
    """The shape of value[index]; InputError when a pair of indices names one entry twice."""
    leading = shape.leading(edit.site)
    ids = torch.arange(math.prod(leading)).view(leading)[index]
    if any(isinstance(i, Tensor) for i in index) and ids.unique().numel() < ids.numel():
        raise InputError(f"{name}: the rows, positions and heads name the same entry more than once; "
                         "name each (row, position, head) once")
    return ids.shape + shape.features(edit.site)


def check_tensor(value: Any, field_name: str, selected: torch.Size, shape: Shape, name: str) -> Tensor:
    """A floating tensor on the model's device that broadcasts to the place's shape, cast to the model's dtype."""
    if not isinstance(value, Tensor):
        raise InputError(f"{name}.{field_name}: expected a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise InputError(f"{name}.{field_name}: expected a floating-point tensor, got dtype {value.dtype}")
    weight = shape.model.wte.weight
    if value.device != weight.device:
        raise InputError(f"{name}.{field_name}: the tensor is on {value.device}, the model on {weight.device}")
    try:
        broadcast = torch.broadcast_shapes(value.shape, selected)
    except RuntimeError:
        broadcast = None
    if broadcast != selected:
        raise InputError(f"{name}.{field_name}: shape {list(value.shape)} does not broadcast to the place's shape "
                         f"{list(selected)} (site layouts: {site_layouts()})")
    if not bool(torch.isfinite(value).all()):
        raise InputError(f"{name}.{field_name}: the tensor holds values that are not finite")
    return value


def site_layouts() -> str:
    """Each site's layout, for an error message."""
    return "; ".join(f"{site} {axes}" for site, axes in SITES.items())


def check_number(value: Any, field_name: str, name: str) -> float:
    """A finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name}.{field_name}: expected a finite number, got {value!r}")
    return float(value)


# ---- each operation's check, returning what it computes -----------------------------------------------


def site_module(model: nn.Module, edit: Edit) -> Any:
    """The SphereNorm that runs a norm site."""
    return model.ln_f if edit.site == "ln_f" else getattr(model.h[edit.layer], edit.site)


def site_label(edit: Edit) -> str:
    """h.3.ln_1 or ln_f."""
    return "ln_f" if edit.site == "ln_f" else site_name(edit.layer, edit.site)


def source_values(model: nn.Module, source: Any, edit: Edit, site: str, layer: int | None, shape: Shape,
                  name: str, field_name: str, any_batch: bool = False) -> Tensor:
    """The site's values in another run, for this pass's positions: [B_source, T, ...] (B_source = 1 or B
    unless any_batch), on the model's device and in its dtype."""
    if not isinstance(source, Captured) and not hasattr(source, "blocks"):
        raise InputError(f"{name}.{field_name}: expected a Trace (or its .captured), got {type(source).__name__}")
    captured = getattr(source, "captured", source)
    states = getattr(source, "states", None)
    values = None
    if isinstance(captured, Captured) and site in captured.values:
        values, offset = captured.values[site], captured.start
        values = values if site == "ln_f" else values[layer]
    elif states is not None and site in ("resid_pre", "resid_post"):  # the trace's states x_0 … x_L
        values, offset = states[layer + (site == "resid_post")], 0
    if values is None:
        raise InputError(f"{name}.{field_name}: the run captured no {site!r}; trace it with "
                         f"TraceRequest(capture=({site!r},))")
    first, last = shape.start - offset, shape.end - offset
    if first < 0 or last > values.shape[1]:
        raise InputError(f"{name}.{field_name}: the run holds positions {offset} … {offset + values.shape[1] - 1}, "
                         f"this pass needs {shape.start} … {shape.end - 1}")
    features = shape.features(edit.site) if site == edit.site else (shape.model.config.n_embd,)
    if tuple(values.shape[2 + (site in HEAD_SITES):]) != features:
        raise InputError(f"{name}.{field_name}: its {site!r} has shape {list(values.shape)}, "
                         f"not [B, T, ...{list(features)}]")
    if not any_batch and values.shape[0] not in (1, shape.batch):
        raise InputError(f"{name}.{field_name}: the run has {values.shape[0]} rows; a source has 1 (it serves "
                         f"every row) or the batch's {shape.batch}")
    weight = shape.model.wte.weight
    return values[:, first:last].to(device=weight.device, dtype=values.dtype if site == "pattern" else weight.dtype)


def whole(values: Tensor, shape: Shape) -> Tensor:
    """[1 or B, T, ...] -> [B, T, ...] (a view)."""
    return values.expand(shape.batch, *values.shape[1:])


def check_set(model: nn.Module, edit: Set, shape: Shape, index: tuple, selected: torch.Size, name: str) -> Operate:
    if (edit.value is None) == (edit.source is None):
        raise InputError(f"{name}: give exactly one of value (a tensor) and source (another run's trace)")
    if edit.value is not None:
        value = check_tensor(edit.value, "value", selected, shape, name)
        return lambda old, out, x: value.to(old.dtype)
    source = whole(source_values(model, edit.source, edit, edit.site, edit.layer, shape, name, "source"), shape)
    return lambda old, out, x: source[index]


def check_add(model: nn.Module, edit: Add, shape: Shape, index: tuple, selected: torch.Size, name: str) -> Operate:
    vector = check_tensor(edit.vector, "vector", selected, shape, name)
    coefficient = check_number(edit.coefficient, "coefficient", name)
    if coefficient == 0 or not bool(vector.any()):
        raise InputError(f"{name}: {'coefficient 0' if coefficient == 0 else 'a zero vector'} adds nothing; "
                         "an edit must change what it names")
    step = coefficient * vector
    return lambda old, out, x: old + step.to(old.dtype)


def check_scale(model: nn.Module, edit: Scale, shape: Shape, index: tuple, selected: torch.Size,
                name: str) -> Operate:
    factor = check_number(edit.factor, "factor", name)
    if factor == 1:
        raise InputError(f"{name}.factor: scaling by 1 changes nothing; an edit must change what it names")
    return lambda old, out, x: old * factor


def check_ablate(model: nn.Module, edit: Ablate, shape: Shape, index: tuple, selected: torch.Size,
                 name: str) -> Operate:
    if edit.how not in ABLATIONS:
        raise InputError(f"{name}.how: {edit.how!r} is not one of {', '.join(ABLATIONS)}")
    if edit.how == "zero":
        if edit.reference is not None:
            raise InputError(f"{name}.reference: a zero ablation reads no reference run; leave reference=None")
        return lambda old, out, x: torch.zeros_like(old)
    if edit.reference is None:
        raise InputError(f"{name}.reference: how={edit.how!r} needs a reference run's trace that captured "
                         f"{edit.site!r}")
    values = source_values(model, edit.reference, edit, edit.site, edit.layer, shape, name, "reference", True)
    if edit.how == "mean":
        source = whole(values.mean(dim=0, keepdim=True), shape)  # per position, over the reference's rows
    else:
        generator = torch.Generator().manual_seed(check_seed(edit.seed, name))
        source = values[torch.randint(values.shape[0], (shape.batch,), generator=generator).to(values.device)]
    return lambda old, out, x: source[index]


def check_seed(seed: Any, name: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"{name}.seed: expected an int, got {seed!r}")
    return seed


def check_geometry_site(model: nn.Module, edit: Edit, name: str, needs: str) -> Any:
    """The variant's geometry of a norm site, refused unless it has `needs` ("sphere" or "scale_free")."""
    if edit.site not in NORM_SITES:
        raise InputError(f"{name}.site: {type(edit).__name__} acts on a norm site's point ({', '.join(NORM_SITES)}), "
                         f"not {edit.site!r}")
    variant = site_module(model, edit).variant
    if not getattr(variant.geometry, needs):
        why = ("puts its points on no sphere" if needs == "sphere"
               else "has no per-token scale to freeze (its point is not direction(x) × a scale)")
        raise InputError(f"{name}.site: {site_label(edit)} runs {variant.name!r}, which {why}: "
                         f"{variant.geometry.output_set}")
    return variant.geometry


def check_rotate(model: nn.Module, edit: Rotate, shape: Shape, index: tuple, selected: torch.Size,
                 name: str) -> Operate:
    geometry = check_geometry_site(model, edit, name, "sphere")
    angle = check_number(edit.angle, "angle", name)
    if math.remainder(angle, 2 * math.pi) == 0:
        raise InputError(f"{name}.angle: a rotation by {angle} rad leaves the point where it is")
    if (edit.toward is None) == (edit.toward_position is None):
        raise InputError(f"{name}: give exactly one of toward (a vector) and toward_position (another position)")
    if edit.toward is not None:
        toward = geometry.direction(check_tensor(edit.toward, "toward", selected, shape, name))
        if not bool(toward.any()):
            raise InputError(f"{name}.toward: the vector has no component the site reads "
                             f"({geometry.output_set}); rotating toward it changes nothing")
        return lambda old, out, x: rotated(old, toward.to(old.dtype), angle)
    j = edit.toward_position
    if isinstance(j, bool) or not isinstance(j, int) or not shape.start <= j < shape.end:
        raise InputError(f"{name}.toward_position: expected a position this pass computes "
                         f"({shape.start} … {shape.end - 1}), got {j!r}")
    positions = index[1]
    if j - shape.start in (range(shape.length)[positions] if isinstance(positions, slice)
                           else [positions] if isinstance(positions, int) else positions.tolist()):
        raise InputError(f"{name}.toward_position: position {j} is among the positions rotated; a point cannot "
                         "turn toward itself")
    local = j - shape.start
    return lambda old, out, x: rotated(old, out[:, local:local + 1].expand_as(out)[index], angle)


def rotated(point: Tensor, toward: Tensor, angle: float) -> Tensor:
    """point turned by `angle` toward `toward` in the plane of the two, ‖point‖ kept: r(cos θ p̂ + sin θ û⊥)."""
    p, u = point.double(), toward.double().broadcast_to(point.shape)
    radius = p.norm(dim=-1, keepdim=True)
    p_hat = p / radius
    u_perp = u - (u * p_hat).sum(dim=-1, keepdim=True) * p_hat  # the target's part orthogonal to the point
    size = u_perp.norm(dim=-1, keepdim=True)
    if bool((size <= 1e-12 * u.norm(dim=-1, keepdim=True)).any()):
        raise InputError("Rotate: a target is parallel to the point it should turn the point toward: the plane of "
                         "the rotation is undefined there")
    return (radius * (math.cos(angle) * p_hat + math.sin(angle) * u_perp / size)).to(point.dtype)


def check_freeze_scale(model: nn.Module, edit: FreezeScale, shape: Shape, index: tuple, selected: torch.Size,
                       name: str) -> Operate:
    geometry = check_geometry_site(model, edit, name, "scale_free")
    if edit.reference is None:
        raise InputError(f"{name}.reference: give the trace of the run whose scale to keep")
    site, layer = FREEZE_INPUT[edit.site], edit.layer
    if edit.site == "ln_f":
        layer = shape.model.config.n_layer - 1
    x_ref = source_values(model, edit.reference, edit, site, layer, shape, name, "reference")  # [1 or B, T, d]
    direction = geometry.direction
    with torch.no_grad():
        scale = vector_norm(site_module(model, edit).project(x_ref)) / vector_norm(direction(x_ref))  # [1|B, T]
    scale = whole(scale, shape)[index[:2]].unsqueeze(-1)
    return lambda old, out, x: (direction(x[index[:2]]) * scale).to(old.dtype)


FREEZE_INPUT = {"ln_1": "resid_pre", "ln_2": "resid_mid", "ln_f": "resid_post"}  # the residual each site reads

CHECKS: dict[type, Callable[..., Operate]] = {Set: check_set, Add: check_add, Scale: check_scale,
                                              Ablate: check_ablate, Rotate: check_rotate,
                                              FreezeScale: check_freeze_scale}
