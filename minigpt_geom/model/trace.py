"""The forward pass's own account of its geometry: every block's diagnostics, stacked by layer.

`logits, trace = model(idx, trace=True)`; `trace=TraceRequest(states=True, patterns=True)` keeps more.
Shapes (L layers, B batch, H heads, T positions, d width):
    trace.ln_1, trace.ln_2   SphereDiagnostics, fields [L, B, T]
    trace.attention          AttentionDiagnostics, fields [L, B, H, T] (pattern [L, B, H, T, T] if kept)
    trace.residual           ResidualDiagnostics, fields [L, B, T]
    trace.ln_f               SphereDiagnostics, fields [B, T]
    trace.states             [L+1, B, T, d] residual states x_0 … x_L, if kept
    trace.captured           editing.Captured: values at the sites TraceRequest(capture=...) names, stacked by
                             layer in the layout an edit indexes (edits.py), e.g. captured["head_out"] [L, B, T, H, d_head]
    trace.edits              editing.AppliedEdit of each edit the pass applied, with how far it moved its site

`save`, `load`, `flat` and `to_table` hold the diagnostics and states; the captures and the edit report stay in
memory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar, get_type_hints

import numpy as np
import torch
from torch import Tensor

from .attention import AttentionDiagnostics
from .block import BlockDiagnostics
from .editing import AppliedEdit, Captured
from ..errors import InputError, import_optional
from ..io.trace_files import Layout, read_tensor_file, write_tensor_file
from .norm_site import SphereDiagnostics
from .trace_request import TraceRequest, as_request  # noqa: F401  (re-exported: minigpt_geom.model.trace.TraceRequest)

if TYPE_CHECKING:
    import pandas


# ---- generic helpers over the (nested) diagnostics dataclasses ------------------------------------

D = TypeVar("D")


def map_tensors(record: D, fn: Callable[[Tensor], Tensor]) -> D:
    """Apply fn to every tensor of a dataclass, in nested dataclasses, dicts and tuples too (others stay)."""
    def apply(value: Any) -> Any:
        if isinstance(value, Tensor):
            return fn(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return map_tensors(value, fn)
        if isinstance(value, dict):
            return {key: apply(item) for key, item in value.items()}
        return tuple(apply(item) for item in value) if isinstance(value, tuple) else value

    return dataclasses.replace(record, **{f.name: apply(getattr(record, f.name)) for f in dataclasses.fields(record)
                                          if f.init})


def stack_records(records: Sequence[D]) -> D:
    """L records with fields [...] -> one record with fields [L, ...] (nested dataclasses too)."""
    first = records[0]
    if not dataclasses.is_dataclass(first):
        return torch.stack(records)
    return dataclasses.replace(first, **{
        f.name: stack_records([getattr(r, f.name) for r in records])
        for f in dataclasses.fields(first) if getattr(first, f.name) is not None
    })


def flatten(record: Any, prefix: str = "") -> dict[str, Tensor]:
    """A dataclass of tensors -> {"field.subfield": tensor}, None fields left out."""
    out: dict[str, Tensor] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        elif value is not None:
            out[prefix + f.name] = value
    return out


def unflatten(kind: type[D], tensors: dict[str, Tensor], prefix: str = "") -> D:
    """Inverse of `flatten`: build a `kind` from dotted names (absent optional fields are None)."""
    hints = get_type_hints(kind)
    return kind(**{
        f.name: unflatten(hints[f.name], tensors, f"{prefix}{f.name}.") if dataclasses.is_dataclass(hints[f.name])
        else tensors.get(prefix + f.name)
        for f in dataclasses.fields(kind)
    })


# ---- the trace --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """All diagnostics of one forward pass; see the module docstring for shapes."""

    blocks: BlockDiagnostics  # every block's diagnostics, each field stacked along a leading layer axis
    ln_f: SphereDiagnostics
    states: Tensor | None = None
    captured: Captured | None = None  # the sites TraceRequest.capture named
    edits: tuple[AppliedEdit, ...] = ()  # each edit applied, and how far it moved its site

    @classmethod
    def gather(cls, blocks: Sequence[BlockDiagnostics], ln_f: SphereDiagnostics, states: Tensor | None,
               captured: Captured | None = None, edits: tuple[AppliedEdit, ...] = ()) -> "Trace":
        """Stack per-block diagnostics along a new leading layer axis."""
        return cls(stack_records(blocks), ln_f, states, captured, edits)

    ln_1 = property(lambda self: self.blocks.ln_1, doc="SphereDiagnostics of every block's first site, [L, B, T].")
    attention = property(lambda self: self.blocks.attention, doc="AttentionDiagnostics, [L, B, H, T].")
    ln_2 = property(lambda self: self.blocks.ln_2, doc="SphereDiagnostics of every block's second site, [L, B, T].")
    residual = property(lambda self: self.blocks.residual, doc="ResidualDiagnostics, [L, B, T].")

    @property
    def n_layer(self) -> int:
        """Number of blocks L."""
        return self.residual.angle.shape[0]

    @property
    def angular_path(self) -> Tensor:
        """[L, B, T] cumulative angle travelled after each block (radians), in the geometry of each block's ln_1."""
        return self.residual.angle.cumsum(dim=0)

    def layer(self, index: int) -> BlockDiagnostics:
        """The diagnostics of block `index`, fields without the layer axis."""
        return map_tensors(self.blocks, lambda t: t[index])

    def head(self, layer: int, head: int) -> AttentionDiagnostics:
        """Attention diagnostics of one head: fields [B, T] (pattern [B, T, T])."""
        return map_tensors(self.attention, lambda t: t[layer, :, head])

    def to(self, *args: Any, **kwargs: Any) -> "Trace":
        """Move or cast every tensor, as Tensor.to does."""
        return map_tensors(self, lambda t: t.to(*args, **kwargs))

    # ---- flat form: "group.field" -> tensor, for files and tables -------------------------------
    def flat(self) -> dict[str, Tensor]:
        """Every tensor under a dotted name such as `attention.entropy`, `ln_f.radius`; `states` if kept."""
        kept = {"states": self.states} if self.states is not None else {}
        return {**flatten(self.blocks), **flatten(self.ln_f, "ln_f."), **kept}

    @classmethod
    def from_flat(cls, tensors: dict[str, Tensor]) -> "Trace":
        """Inverse of `flat`."""
        return cls(unflatten(BlockDiagnostics, tensors), unflatten(SphereDiagnostics, tensors, "ln_f."),
                   tensors.get("states"))

    def save(self, path: str | Path) -> Path:
        """Write to `.safetensors` or `.npz` (chosen by the suffix), atomically; never pickled."""
        return write_tensor_file(path, self.flat(), "trace file")

    @classmethod
    def load(cls, path: str | Path, max_bytes: int = 2**30) -> "Trace":
        """Read a file written by `save`, after checking its names, shapes, dtypes and size (InputError)."""
        return cls.from_flat(read_tensor_file(path, max_bytes, lambda layout: check_layout(path, layout),
                                              "trace file"))

    def to_table(self) -> dict[str, np.ndarray]:
        """Tidy columns layer, head, batch, position, metric, value (head = -1 where a metric has none).

        `trace.to_dataframe()` (or `pandas.DataFrame(trace.to_table())`) has one row per (layer, head, batch,
        position, metric);
        layer = L marks ln_f. Attention patterns and states are left out (they are not per-position scalars)."""
        columns: dict[str, list[np.ndarray]] = {k: [] for k in ("layer", "head", "batch", "position", "metric", "value")}
        for metric, values in self.flat().items():
            if metric in ("states", "attention.pattern"):
                continue
            values = values.detach().float().cpu()
            layers = np.arange(self.n_layer)
            if metric.startswith("ln_f."):  # [B, T] -> [1, B, T]: ln_f is "layer L"
                values, layers = values.unsqueeze(0), np.array([self.n_layer])
            if values.dim() == 3:  # [L, B, T] -> [L, 1, B, T]: no head axis
                values, heads = values.unsqueeze(1), np.array([-1])
            else:  # [L, B, H, T] -> [L, H, B, T]
                values, heads = values.transpose(1, 2), np.arange(values.shape[2])
            grid = np.meshgrid(layers, heads, np.arange(values.shape[2]), np.arange(values.shape[3]), indexing="ij")
            for name, axis in zip(("layer", "head", "batch", "position"), grid):
                columns[name].append(axis.ravel())
            columns["metric"].append(np.full(values.numel(), metric, dtype=object))
            columns["value"].append(values.numpy().ravel())
        return {k: np.concatenate(v) for k, v in columns.items()}

    def to_dataframe(self) -> pandas.DataFrame:
        """`to_table()` as a pandas DataFrame (pandas is not a dependency: pip install pandas)."""
        return import_optional("pandas", "Trace.to_dataframe()").DataFrame(self.to_table())

    def nbytes(self) -> int:
        """Memory held by the trace's tensors (captures included), in bytes."""
        captured = list(self.captured.values.values()) if self.captured is not None else []
        return sum(t.numel() * t.element_size() for t in [*self.flat().values(), *captured])


# ---- what a trace file holds (io/trace_files.py reads it, checking everything before any data) ----------


def expected_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The shape every name must have, given the file's own residual.angle [L, B, T] and entropy [L, B, H, T]."""
    angle, entropy = shapes.get("residual.angle"), shapes.get("attention.entropy")
    if angle is None or len(angle) != 3 or entropy is None or len(entropy) != 4:
        raise InputError("a trace needs residual.angle [L, B, T] and attention.entropy [L, B, H, T]")
    (L, B, T), H = angle, entropy[2]
    expected = {}
    for group, kind in get_type_hints(BlockDiagnostics).items():
        shape = (L, B, H, T) if kind is AttentionDiagnostics else (L, B, T)
        expected.update({f"{group}.{f.name}": shape for f in dataclasses.fields(kind)})
    expected.update({f"ln_f.{f.name}": (B, T) for f in dataclasses.fields(SphereDiagnostics)})
    expected["attention.pattern"] = (L, B, H, T, T)
    states = shapes.get("states")
    if states is not None:
        expected["states"] = (L + 1, B, T, states[-1] if len(states) == 4 else -1)
    return expected


OPTIONAL = {"attention.pattern", "states"}


def check_layout(path: str | Path, layout: Layout) -> None:
    """Raise InputError unless the names and shapes are those of a trace (io/trace_files.py checks the rest)."""
    shapes = {name: shape for name, (shape, _) in layout.items()}
    expected = expected_shapes(shapes)
    unknown = sorted(set(layout) - set(expected))
    missing = sorted(set(expected) - set(layout) - OPTIONAL)
    if unknown or missing:
        raise InputError(f"{path} is not a trace file: unknown {unknown or 'none'}, missing {missing or 'none'}")
    for name, shape in shapes.items():
        if tuple(shape) != expected[name]:
            raise InputError(f"{path}: {name} has shape {list(shape)}, expected {list(expected[name])}")
