"""Files of named float tensors, as a trace is saved: `.safetensors` or `.npz`, written atomically, never pickled,
and read as hostile input: every name, shape, dtype and the total size is checked from the headers (the
safetensors header; each `.npy` member's header and its size in the zip directory) before any data is read.

What the names and shapes must be is the caller's to say (`check`, given the file's layout): model/trace.py
knows a trace's fields, this module only the formats.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..errors import InputError
from .files import atomic_write, regular_file

SUFFIXES = (".safetensors", ".npz")
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}  # the dtypes such a file may hold
SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}

Layout = dict[str, tuple[tuple[int, ...], str]]  # name -> (shape, dtype name), from the headers alone


def check_suffix(path: Path, what: str) -> None:
    """InputError unless `path` ends in .safetensors or .npz."""
    if path.suffix not in SUFFIXES:
        raise InputError(f"{what}s end in .safetensors or .npz, got {path.name}")


def write_tensor_file(path: str | Path, tensors: Mapping[str, Tensor], what: str = "tensor file") -> Path:
    """Write `tensors` to a `.safetensors` or `.npz` file (chosen by the suffix), atomically."""
    path = Path(path)
    check_suffix(path, what)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    if path.suffix == ".safetensors":
        return atomic_write(path, lambda temporary: save_file(tensors, str(temporary)))
    # NumPy has no bfloat16: such tensors are widened to float32 (exactly)
    arrays = {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in tensors.items()}
    return atomic_write(path, lambda temporary: np.savez(temporary, **arrays))


def read_tensor_file(path: str | Path, max_bytes: int, check: Callable[[Layout], None],
                     what: str = "tensor file") -> dict[str, Tensor]:
    """The tensors of a file `write_tensor_file` wrote, after `check(layout)` (names and shapes), the dtypes
    (floating point) and the total size (at most `max_bytes`) are checked from the headers; InputError if not."""
    path = Path(path)
    check_suffix(path, what)
    read = read_safetensors if path.suffix == ".safetensors" else read_npz
    try:
        regular_file(path, max_bytes + 2**24)  # no FIFO or device; headers and zip records on top of the data
        return read(path, lambda layout: check_layout(path, layout, max_bytes, check))
    except (OSError, ValueError, zipfile.BadZipFile, SafetensorError) as error:  # a damaged or missing file
        if isinstance(error, InputError):
            raise
        raise InputError(f"{path} is not a readable {what}: {error}") from None


def check_layout(path: Path, layout: Layout, max_bytes: int, check: Callable[[Layout], None]) -> None:
    """The caller's check of names and shapes, then floating-point dtypes and a total of at most max_bytes."""
    check(layout)
    for name, (_, dtype) in layout.items():
        if dtype not in ITEMSIZE:
            raise InputError(f"{path}: {name} has dtype {dtype}, expected a floating-point type")
    total = sum(math.prod(shape) * ITEMSIZE[dtype] for shape, dtype in layout.values())
    if total > max_bytes:
        raise InputError(f"{path} holds {total / 2**20:.0f} MiB of tensors, more than max_bytes "
                         f"({max_bytes / 2**20:.0f} MiB); pass a larger max_bytes to read it")


def read_safetensors(path: Path, check: Callable[[Layout], None]) -> dict[str, Tensor]:
    """Names, shapes and dtypes from the header first (the safetensors library checks the format)."""
    with safe_open(str(path), framework="pt") as f:
        layout = {name: (tuple(f.get_slice(name).get_shape()), str(f.get_slice(name).get_dtype()))
                  for name in f.keys()}
        layout = {n: (shape, SAFETENSORS_DTYPES.get(d, d)) for n, (shape, d) in layout.items()}
        check(layout)
        return {name: f.get_tensor(name) for name in layout}


def read_npz(path: Path, check: Callable[[Layout], None]) -> dict[str, Tensor]:
    """Each member's .npy header and uncompressed size first, then the data (never unpickled)."""
    layout, headers = {}, {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in ((1, 0), (2, 0)):
                    raise InputError(f"{path}: {info.filename} is not a .npy array of format 1.0 or 2.0")
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(member)
                headers[name] = member.tell()
            if dtype.hasobject or fortran:
                raise InputError(f"{path}: {name} is not a plain numeric array")
            if info.file_size != headers[name] + math.prod(shape) * dtype.itemsize:
                raise InputError(f"{path}: {name} holds {info.file_size} bytes, not what its header declares")
            layout[name] = (tuple(shape), dtype.name)
        check(layout)
        tensors = {}
        for info in archive.infolist():
            with archive.open(info) as member:
                array = np.lib.format.read_array(member, allow_pickle=False)
            tensors[info.filename.removesuffix(".npy")] = torch.from_numpy(array)
        return tensors
