"""Reading GPT-2 checkpoints: safetensors files in the official or the `transformers` layout.

A safetensors file is an 8-byte little-endian header length n, n bytes of JSON
({name: {dtype, shape, data_offsets: [begin, end]}}, offsets relative to the data section), then raw data.
We parse the header ourselves so that each tensor is read straight into the model's own storage: no
second copy of the weights and nothing unpickled. The two layouts differ only in names:
  official      wte.weight, h.0.attn.c_attn.weight, h.0.attn.bias (a causal-mask buffer), ln_f.bias
  transformers  transformer.wte.weight, …, maybe lm_head.weight (the tied embedding again)
Linear weights are [in, out] in both, which is the layout our `Affine` keeps: nothing is transposed.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import torch
from torch import Tensor

from .config import GPT2Config
from .errors import CheckpointError, WeightsNotFoundError
from .hub import resolve_file
from .sphere import NormSpec

if TYPE_CHECKING:
    from .model import GPT2

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
MASK_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")  # causal masks, not parameters


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in a safetensors file."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    end: int


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Parse and check a safetensors header: names, dtypes, shapes and byte ranges inside the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path} is not a safetensors file: it is only {size} bytes long")
        (n,) = struct.unpack("<Q", prefix)
        if n > min(size - 8, 100_000_000):
            raise CheckpointError(f"{path} is not a safetensors file (header length {n} exceeds the file)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path} has an unreadable safetensors header: {error}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has an unreadable safetensors header")
    header.pop("__metadata__", None)
    entries = {}
    for name, info in header.items():
        try:
            begin, end = info["data_offsets"]
            entry = TensorEntry(DTYPES.get(info["dtype"]), tuple(info["shape"]), 8 + n + begin, 8 + n + end)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed header entry for tensor {name!r}") from None
        if entry.dtype is None and not MASK_BUFFER.match(strip_prefix(name)):
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {info['dtype']}, expected a float type")
        if entry.end > size:
            raise CheckpointError(
                f"{path} is truncated: tensor {name!r} ends at byte {entry.end} but the file has {size} bytes "
                f"(download it again)"
            )
        if entry.dtype is not None:
            expected = torch.Size(entry.shape).numel() * torch.empty(0, dtype=entry.dtype).element_size()
            if entry.end - entry.begin != expected:
                raise CheckpointError(f"{path}: tensor {name!r} holds {entry.end - entry.begin} bytes, "
                                      f"its shape {list(entry.shape)} needs {expected}")
        entries[name] = entry
    return entries


def strip_prefix(name: str) -> str:
    """`transformer.h.0.ln_1.weight` -> `h.0.ln_1.weight` (transformers' save_pretrained layout)."""
    return name[len("transformer."):] if name.startswith("transformer.") else name


def model_entries(path: Path, header: dict[str, TensorEntry]) -> dict[str, TensorEntry]:
    """Map file names to our parameter names; drop mask buffers and a tied lm_head."""
    entries = {}
    for name, entry in header.items():
        ours = strip_prefix(name)
        if MASK_BUFFER.match(ours):
            continue
        if ours == "lm_head.weight":  # the unembedding, tied to wte in GPT-2: checked when read
            continue
        if ours in entries:
            raise CheckpointError(f"{path}: tensor {ours!r} appears twice (with and without 'transformer.')")
        entries[ours] = entry
    return entries


def infer_config(path: Path, entries: dict[str, TensorEntry], config_json: dict | None) -> GPT2Config:
    """Sizes from the tensor shapes; head count and ε from config.json when given, else n_embd/64 and 1e-5."""
    for required in ("wte.weight", "wpe.weight"):
        if required not in entries:
            raise CheckpointError(f"{path} is not a GPT-2 checkpoint: it has no tensor {required!r}")
    vocab_size, n_embd = entries["wte.weight"].shape
    n_ctx = entries["wpe.weight"].shape[0]
    layers = {int(m.group(1)) for name in entries if (m := re.match(r"^h\.(\d+)\.", name))}
    n_layer = max(layers) + 1 if layers else 0
    config_json = config_json or {}
    activation = config_json.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"{path}: activation {activation!r} is not GPT-2's tanh GELU (gelu_new)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if config_json.get(flag):
            raise CheckpointError(f"{path}: config.json sets {flag}, which this GPT-2 does not implement")
    n_head = config_json.get("n_head", max(n_embd // 64, 1))
    ln_eps = config_json.get("layer_norm_epsilon", 1e-5)
    try:
        return GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_ctx=n_ctx, vocab_size=vocab_size,
                          ln_eps=ln_eps)
    except ValueError as error:
        raise CheckpointError(f"{path}: cannot infer a GPT-2 shape ({error})") from None


def read_into(f: BinaryIO, entry: TensorEntry, target: Tensor) -> None:
    """Read one tensor's bytes straight into `target`'s storage (converting dtype/device if they differ)."""
    staging = target if target.dtype == entry.dtype and target.device.type == "cpu" else torch.empty(
        entry.shape, dtype=entry.dtype)
    f.seek(entry.begin)
    view = memoryview(staging.view(torch.uint8).numpy()).cast("B") if staging.numel() else memoryview(b"")
    if f.readinto(view) != entry.end - entry.begin:
        raise CheckpointError(f"{f.name} ended early while reading a tensor (truncated download?)")
    if staging is not target:
        target.copy_(staging)


def load_weights(model: torch.nn.Module, path: Path, entries: dict[str, TensorEntry],
                 lm_head: TensorEntry | None = None) -> None:
    """Fill every parameter of `model` from the file after checking names, shapes and finiteness."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(entries))
    unexpected = sorted(set(entries) - set(params))
    if missing or unexpected:
        parts = [f"missing {len(missing)} tensor(s): {', '.join(missing[:8])}" if missing else "",
                 f"unexpected {len(unexpected)} tensor(s): {', '.join(unexpected[:8])}" if unexpected else ""]
        raise CheckpointError(f"{path} does not fit GPT-2 ({model.config}): " + "; ".join(p for p in parts if p))
    for name, param in params.items():
        if tuple(param.shape) != entries[name].shape:
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {list(entries[name].shape)}, expected {list(param.shape)}"
            )
    with path.open("rb") as f:
        for name, param in params.items():
            read_into(f, entries[name], param.data)
            # A NaN or ±inf anywhere makes the sum non-finite; the sum allocates nothing (isfinite confirms).
            if not torch.isfinite(param.data.sum()) and not torch.isfinite(param.data).all():
                raise CheckpointError(f"{path}: tensor {name!r} contains NaN or infinite values")
        if lm_head is not None:  # transformers may store the tied unembedding again: it must equal wte
            head = torch.empty(lm_head.shape, dtype=lm_head.dtype or torch.float32)
            read_into(f, lm_head, head)
            if head.shape != model.wte.weight.shape or not torch.equal(head.to(model.wte.weight), model.wte.weight):
                raise CheckpointError(f"{path}: lm_head.weight differs from wte.weight; GPT-2 ties them")


def checkpoint_files(source: str | os.PathLike) -> tuple[Path, dict | None]:
    """Resolve `source` to (model.safetensors path, parsed config.json or None)."""
    path = Path(source)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path} is not a .safetensors file (pickled .bin checkpoints are never loaded)")
        config_path = path.with_name("config.json")
        config_path = config_path if config_path.is_file() else None
    elif path.suffix == ".safetensors" and not path.exists():
        raise WeightsNotFoundError(f"no such file: {path}")
    else:
        weights = resolve_file(source, "model.safetensors")
        config_path = resolve_file(source, "config.json", required=False)
        path = weights
    config = None
    if config_path is not None:
        try:
            config = json.loads(Path(config_path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{config_path} is not valid JSON: {error}") from None
    return path, config


def load_pretrained(cls: type[GPT2], source: str | os.PathLike, *, device: str | torch.device, dtype: torch.dtype,
                    norm: NormSpec) -> GPT2:
    """Build a `cls` of the checkpoint's shape and fill it from the file (see GPT2.from_pretrained)."""
    path, config_json = checkpoint_files(source)
    header = read_header(path)
    entries = model_entries(path, header)
    config = infer_config(path, entries, config_json)
    with torch.device("cpu"):  # parameters are torch.empty (uninitialised): storage is allocated once, then read into
        model = cls(config, norm=norm).to(dtype)
    load_weights(model, path, entries, lm_head=header.get("lm_head.weight"))
    return model.to(device).eval()
