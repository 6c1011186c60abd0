"""The forward pass's own account of its geometry: every block's diagnostics, stacked by layer.

`logits, trace = model(idx, trace=True)`. Shapes (L layers, B batch, H heads, T positions, d width):
    trace.ln_1, trace.ln_2   SphereDiagnostics, fields [L, B, T]
    trace.ln_f               SphereDiagnostics, fields [B, T]
    trace.attention          AttentionDiagnostics, fields [L, B, H, T] (pattern [L, B, H, T, T] if kept)
    trace.residual           ResidualDiagnostics, fields [L, B, T]
    trace.states             [L+1, B, T, d] residual states x_0 … x_L, if kept
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor

from .attention import AttentionDiagnostics
from .block import BlockDiagnostics, ResidualDiagnostics
from .sphere import SphereDiagnostics

D = TypeVar("D")


def map_tensors(record: D, fn: Callable[[Tensor], Tensor]) -> D:
    """Apply fn to every tensor field of a diagnostics dataclass (None fields stay None)."""
    return dataclasses.replace(
        record, **{f.name: fn(v) for f in dataclasses.fields(record) if (v := getattr(record, f.name)) is not None}
    )


def stack_records(records: Sequence[D]) -> D:
    """A list of L records with fields [...] -> one record with fields [L, ...]."""
    first = records[0]
    return dataclasses.replace(
        first,
        **{
            f.name: torch.stack([getattr(r, f.name) for r in records])
            for f in dataclasses.fields(first)
            if getattr(first, f.name) is not None
        },
    )


@dataclass(frozen=True)
class Trace:
    """All diagnostics of one forward pass; see the module docstring for shapes."""

    ln_1: SphereDiagnostics
    attention: AttentionDiagnostics
    ln_2: SphereDiagnostics
    residual: ResidualDiagnostics
    ln_f: SphereDiagnostics
    states: Tensor | None = None

    @classmethod
    def gather(cls, blocks: Sequence[BlockDiagnostics], ln_f: SphereDiagnostics, states: Tensor | None) -> "Trace":
        """Stack per-block diagnostics along a new leading layer axis."""
        return cls(
            ln_1=stack_records([b.ln_1 for b in blocks]),
            attention=stack_records([b.attention for b in blocks]),
            ln_2=stack_records([b.ln_2 for b in blocks]),
            residual=stack_records([b.residual for b in blocks]),
            ln_f=ln_f,
            states=states,
        )

    @property
    def n_layer(self) -> int:
        """Number of blocks L."""
        return self.residual.angle.shape[0]

    @property
    def angular_path(self) -> Tensor:
        """[L, B, T] cumulative angle travelled along the sphere after each block (radians)."""
        return self.residual.angle.cumsum(dim=0)

    def layer(self, index: int) -> BlockDiagnostics:
        """The diagnostics of block `index`, fields without the layer axis."""
        take = lambda t: t[index]  # noqa: E731
        return BlockDiagnostics(
            map_tensors(self.ln_1, take), map_tensors(self.attention, take),
            map_tensors(self.ln_2, take), map_tensors(self.residual, take),
        )

    def head(self, layer: int, head: int) -> AttentionDiagnostics:
        """Attention diagnostics of one head: fields [B, T] (pattern [B, T, T])."""
        return map_tensors(self.attention, lambda t: t[layer, :, head])

    def to(self, *args: Any, **kwargs: Any) -> "Trace":
        """Move or cast every tensor, as Tensor.to does."""
        return self._map(lambda t: t.to(*args, **kwargs))

    def _map(self, fn: Callable[[Tensor], Tensor]) -> "Trace":
        return Trace(
            ln_1=map_tensors(self.ln_1, fn), attention=map_tensors(self.attention, fn),
            ln_2=map_tensors(self.ln_2, fn), residual=map_tensors(self.residual, fn),
            ln_f=map_tensors(self.ln_f, fn), states=None if self.states is None else fn(self.states),
        )

    # ---- flat form: "group.field" -> tensor, for files and tables -------------------------------
    GROUPS = {"ln_1": SphereDiagnostics, "attention": AttentionDiagnostics, "ln_2": SphereDiagnostics,
              "residual": ResidualDiagnostics, "ln_f": SphereDiagnostics}

    def flat(self) -> dict[str, Tensor]:
        """Every tensor under a dotted name such as `attention.entropy`; `states` if kept."""
        out = {f"{g}.{f.name}": v for g in self.GROUPS for f in dataclasses.fields(getattr(self, g))
               if (v := getattr(getattr(self, g), f.name)) is not None}
        if self.states is not None:
            out["states"] = self.states
        return out

    @classmethod
    def from_flat(cls, tensors: dict[str, Tensor]) -> "Trace":
        """Inverse of `flat`."""
        groups = {
            g: kind(**{f.name: tensors.get(f"{g}.{f.name}") for f in dataclasses.fields(kind)})
            for g, kind in cls.GROUPS.items()
        }
        return cls(**groups, states=tensors.get("states"))

    def save(self, path: str | Path) -> None:
        """Write to `.safetensors` or `.npz` (chosen by the suffix); never pickled."""
        path = Path(path)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.flat().items()}
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(path))
        elif path.suffix == ".npz":
            # NumPy has no bfloat16: such tensors are widened to float32 (exactly)
            np.savez(path, **{k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in tensors.items()})
        else:
            raise ValueError(f"trace files end in .safetensors or .npz, got {path.name}")

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        """Read a file written by `save`."""
        path = Path(path)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return cls.from_flat(load_file(str(path)))
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return cls.from_flat({k: torch.from_numpy(data[k]) for k in data.files})
        raise ValueError(f"trace files end in .safetensors or .npz, got {path.name}")

    def to_table(self) -> dict[str, np.ndarray]:
        """Tidy columns layer, head, batch, position, metric, value (head = -1 where a metric has none).

        `pandas.DataFrame(trace.to_table())` gives one row per (layer, head, batch, position, metric);
        layer = L marks ln_f. Attention patterns and states are left out (they are not per-position scalars)."""
        columns: dict[str, list[np.ndarray]] = {k: [] for k in ("layer", "head", "batch", "position", "metric", "value")}

        def add(metric: str, values: Tensor, layer: int | None) -> None:
            values = values.detach().float().cpu()
            if layer is not None:  # [B, T] -> [1, B, T]: ln_f is "layer L"
                values = values.unsqueeze(0)
            if values.dim() == 3:  # [L, B, T] -> [L, 1, B, T]: no head axis
                values = values.unsqueeze(1)
                heads = np.array([-1])
            else:  # [L, B, H, T] -> [L, H, B, T]
                values = values.transpose(1, 2)
                heads = np.arange(values.shape[1])
            L, H, B, T = values.shape
            grid = np.meshgrid(np.arange(L) if layer is None else np.array([layer]), heads, np.arange(B),
                               np.arange(T), indexing="ij")
            for name, axis in zip(("layer", "head", "batch", "position"), grid):
                columns[name].append(axis.ravel())
            columns["metric"].append(np.full(values.numel(), metric, dtype=object))
            columns["value"].append(values.numpy().ravel())

        for name, values in self.flat().items():
            if name in ("states", "attention.pattern"):
                continue
            add(name, values, self.n_layer if name.startswith("ln_f.") else None)
        return {k: np.concatenate(v) for k, v in columns.items()}

    def nbytes(self) -> int:
        """Memory held by the trace's tensors, in bytes."""
        return sum(t.numel() * t.element_size() for t in self.flat().values())
