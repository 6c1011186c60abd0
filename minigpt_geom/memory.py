"""Will it fit? The one memory probe, the memory a model needs, and the check made before anything is allocated.

The probe is the memory that can still be allocated, not the machine's physical memory: the least of the
system's MemAvailable, what a cgroup (a container) leaves, and what `ulimit -v` leaves; a GPU's free memory.
The estimates built on it (training/memory.py, the commands' own) are deliberately rough (within a factor of
about two): they exist to refuse, in one line, a size that cannot fit at all (`--n-embd 65536`,
`--batch-size 100000000`, a crafted 24 GiB checkpoint), not to predict usage.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import GPT2Config
from .errors import InputError

FLOAT32 = 4  # bytes


def parameter_count(config: GPT2Config) -> int:
    """Parameters of a GPT-2 of this shape: E, P, L blocks of 12d² + 13d, ln_f (the unembedding is E, tied)."""
    d = config.n_embd
    return (config.vocab_size + config.n_ctx) * d + config.n_layer * (12 * d * d + 13 * d) + 2 * d


def model_bytes(config: GPT2Config) -> int:
    """float32 weights of the model."""
    return parameter_count(config) * FLOAT32


def kilobytes(path: str, key: str) -> int | None:
    """The `key: N kB` line of a /proc file in bytes (MemAvailable, VmSize), None if absent."""
    try:
        with open(path, encoding="ascii") as f:
            return next((int(line.split()[1]) * 1024 for line in f if line.startswith(f"{key}:")), None)
    except (OSError, ValueError, IndexError):
        return None


def cgroup_left() -> int | None:
    """What this process's memory cgroup (a container's limit) leaves: limit − usage, the inactive file cache
    counted as free (the kernel reclaims it); None without a limit. cgroup v2, else v1."""
    for folder, limit, usage, cache in (("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
                                        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
                                         "total_inactive_file")):
        try:
            stated = (Path(folder) / limit).read_text().strip()
            if stated == "max":
                return None
            used = int((Path(folder) / usage).read_text())
            stats = dict(line.split() for line in (Path(folder) / "memory.stat").read_text().splitlines())
            return int(stated) - used + int(stats.get(cache, 0))
        except (OSError, ValueError):
            continue
    return None


def address_space_left() -> int | None:
    """What `ulimit -v` (RLIMIT_AS) leaves beyond the address space this process already maps; None unlimited."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):  # not a POSIX system
        return None
    if limit == resource.RLIM_INFINITY:
        return None
    return limit - (kilobytes("/proc/self/status", "VmSize") or 0)


def available_bytes(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device`, the one memory probe: a GPU's free memory; on the CPU the
    least of the system's MemAvailable (else the physical memory), what the memory cgroup leaves and what
    `ulimit -v` leaves; None when nothing says."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    system = kilobytes("/proc/meminfo", "MemAvailable")
    if system is None:  # not Linux: the physical memory, if the OS says
        try:
            system = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            pass
    limits = [left for left in (system, cgroup_left(), address_space_left()) if left is not None]
    return max(min(limits), 0) if limits else None


def check_fits(what: str, needed: int, device: torch.device) -> None:
    """InputError before allocating when `what` (an option, a model, a step) needs more than `device` has
    (`needed` bytes, an estimate)."""
    available = available_bytes(device)
    if available is not None and needed > available:
        raise InputError(f"{what} needs about {needed / 2**30:.1f} GiB on {device}, more than the "
                         f"{available / 2**30:.1f} GiB available: choose a smaller size")
