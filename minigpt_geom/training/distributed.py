"""Many processes: torchrun's process group (gloo on CPUs, NCCL on GPUs), joined once, and what the ranks share.

Every collective below waits at most COLLECTIVE_TIMEOUT for the others; a rank that never arrives (it crashed,
or it was started with other options) ends the wait with one line naming the rank that gave up, not a hang of
the backend's default half hour. At the start the ranks compare a hash of each of their settings (`agree`),
so ranks launched with different options refuse at once, naming the first rank and setting that differ.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import InputError, MiniGPTGeomError

COLLECTIVE_TIMEOUT = timedelta(minutes=5)  # the longest a rank waits for the others at one collective


class ProcessGroupError(MiniGPTGeomError):
    """The other processes did not answer within COLLECTIVE_TIMEOUT, or the group broke."""


@dataclass(frozen=True)
class Processes:
    """This process's place among those torchrun started (rank 0 of 1 without torchrun) and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0 writes the files and the progress bar."""
        return self.rank == 0


ALONE = Processes(0, 1, torch.device("cpu"))


def start_processes(device: str | torch.device = "cpu") -> Processes:
    """Join torchrun's process group when its environment is set (gloo on CPU, NCCL on GPUs)."""
    device = torch.device(device)
    if "RANK" not in os.environ:
        return Processes(0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return Processes(dist.get_rank(), dist.get_world_size(), device)


def collective(processes: Processes, what: str, run) -> None:
    """Run one collective; a timeout or a broken group becomes a ProcessGroupError naming this rank."""
    try:
        run()
    except RuntimeError as error:  # gloo and NCCL raise DistBackendError (a RuntimeError) when a peer is gone
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        minutes = COLLECTIVE_TIMEOUT.total_seconds() / 60
        raise ProcessGroupError(f"rank {processes.rank}: the other processes did not join {what} within "
                                f"{minutes:g} minutes, or one of them stopped ({first})") from None


def barrier(processes: Processes) -> None:
    """Wait for every process (a no-op for one)."""
    if processes.world > 1:
        collective(processes, "a barrier", dist.barrier)


def total(values: Tensor, processes: Processes) -> Tensor:
    """Σ over the processes of a small tensor (itself for one)."""
    if processes.world > 1:
        collective(processes, "a sum", lambda: dist.all_reduce(values))
    return values


def value_hash(value: object) -> int:
    """A 63-bit hash of a JSON-able value, the same in every process (Python's hash() is salted per process)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def agree(settings: dict[str, object], processes: Processes) -> None:
    """InputError in every process unless all ranks hold the same settings; it names the first that differs.

    Each rank hashes each setting; all hashes are gathered ([world, n] int64, no pickling), so every rank
    sees the same table and stops with the same message."""
    if processes.world == 1:
        return
    names = sorted(settings)
    mine = torch.tensor([value_hash([name, settings[name]]) for name in names], dtype=torch.int64)
    device = processes.device if dist.get_backend() == "nccl" else torch.device("cpu")
    table = [torch.empty_like(mine, device=device) for _ in range(processes.world)]
    collective(processes, "the settings check", lambda: dist.all_gather(table, mine.to(device)))
    for rank, hashes in enumerate(table[1:], start=1):
        differs = (hashes.cpu() != table[0].cpu()).nonzero()
        if len(differs):
            name = names[int(differs[0])]
            raise InputError(f"rank {rank} was started with another {name} than rank 0 (rank {processes.rank} "
                             f"has {settings[name]!r}): launch every process with the same options")
