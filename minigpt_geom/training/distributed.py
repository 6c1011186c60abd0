"""Many processes: torchrun's process group (gloo on CPUs, NCCL on GPUs), joined once, and what the ranks share.

Every collective below waits at most COLLECTIVE_TIMEOUT for the others; a rank that never arrives (it crashed,
or it was started with other options) ends the wait with one line naming the rank that gave up, not a hang of
the backend's default half hour. At the start the ranks compare a hash of each of their settings (`agree`),
so ranks launched with different options refuse at once, naming the setting and each rank's value.

A rank that is lost (killed, out of memory) breaks the group: gloo raises "Connection closed by peer" in the
others' next collective, and torchrun's agent sends them SIGTERM. Inside `lost_peer_named`, either ends each
survivor with one ProcessGroupError naming the lost rank (peers.py finds it by its process id), which the
command line prints as its one line. What follows on the terminal is torchrun's: its agent's summary, a
ChildFailedError traceback of its own listing each rank's exit code (the lost one's -9, the survivors' 2).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import InputError, MiniGPTGeomError
from .peers import lost_ranks, machine

COLLECTIVE_TIMEOUT = timedelta(minutes=5)  # the longest a rank waits for the others at one collective
VALUE_BYTES = 256  # a setting's value as shown in a disagreement: at most 60 characters of UTF-8


class ProcessGroupError(MiniGPTGeomError):
    """The other processes did not answer within COLLECTIVE_TIMEOUT, or the group broke (a rank was lost)."""


@dataclass(frozen=True)
class Processes:
    """This process's place among those torchrun started (rank 0 of 1 without torchrun) and its device."""

    rank: int
    world: int
    device: torch.device
    local_peers: tuple[tuple[int, int], ...] = ()  # (rank, process id) of the other ranks on this machine

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
    processes = Processes(dist.get_rank(), dist.get_world_size(), device)
    ids = gathered(torch.tensor([os.getpid(), value_hash(machine())]), processes, "the start")  # [world, 2]
    here = int(ids[processes.rank, 1])
    local_peers = tuple((rank, int(pid)) for rank, (pid, where) in enumerate(ids.tolist())
                        if where == here and rank != processes.rank)
    return Processes(processes.rank, processes.world, device, local_peers)


def collective(processes: Processes, what: str, run) -> None:
    """Run one collective; a timeout or a broken group becomes a ProcessGroupError naming the lost rank if
    one of this machine has ended, else this rank."""
    try:
        run()
    except RuntimeError as error:  # gloo and NCCL raise DistBackendError (a RuntimeError) when a peer is gone
        raise group_error(processes, what, error) from None


def group_error(processes: Processes, what: str | None, error: BaseException | None = None) -> ProcessGroupError:
    """What a broken group says in one line: the lost rank and its process when this machine shows one,
    else that the others did not join `what` in time (with the backend's first line, if any)."""
    if lost := lost_ranks(processes.local_peers, wait=2.0 if error is not None else 0.0):
        names = ", ".join(f"rank {rank} (process {pid})" for rank, pid in lost)
        during = f" during {what}" if what else ""
        return ProcessGroupError(f"{names} ended{during}; rank {processes.rank} cannot go on without "
                                 f"{'it' if len(lost) == 1 else 'them'}")
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200] if error is not None else ""
    minutes = COLLECTIVE_TIMEOUT.total_seconds() / 60
    return ProcessGroupError(f"rank {processes.rank}: the other processes did not join {what or 'the work'} within "
                             f"{minutes:g} minutes, or one of them stopped" + (f" ({first})" if first else ""))


def from_backend(error: RuntimeError) -> bool:
    """True for an error of the process group's backend: torch's DistError, or gloo's transport failing."""
    return isinstance(error, dist.DistError) or any(
        words in str(error) for words in ("gloo/transport", "Connection closed by peer", "Connection reset by peer"))


@contextmanager
def lost_peer_named(processes: Processes) -> Iterator[None]:
    """Inside, a lost rank ends this one with a ProcessGroupError naming it, whether this rank learns it from
    a collective that fails outside `collective` (DDP's gradient sums, a bare all_reduce) or from the SIGTERM
    torchrun's agent sends the survivors. A SIGTERM while every rank of this machine lives acts as it would
    have (it is the user's, or a scheduler's); so does any other error."""
    if processes.world == 1 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stopped(number: int, frame: object) -> None:
        if not lost_ranks(processes.local_peers):
            signal.signal(signal.SIGTERM, previous)
            signal.raise_signal(signal.SIGTERM)
            return
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough: this rank ends now, and says why
        raise group_error(processes, None)

    previous = signal.getsignal(signal.SIGTERM)
    previous = previous if previous is not None else signal.SIG_DFL  # None: set outside Python, treated as default
    signal.signal(signal.SIGTERM, stopped)
    try:
        yield
    except ProcessGroupError:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the agent's SIGTERM must not cut the line short
        raise
    except RuntimeError as error:
        if not (from_backend(error) or lost_ranks(processes.local_peers)):
            raise
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise group_error(processes, "a collective", error) from None
    finally:
        if signal.getsignal(signal.SIGTERM) is stopped:
            signal.signal(signal.SIGTERM, previous)


def barrier(processes: Processes) -> None:
    """Wait for every process (a no-op for one)."""
    if processes.world > 1:
        collective(processes, "a barrier", dist.barrier)


def total(values: Tensor, processes: Processes) -> Tensor:
    """Σ over the processes of a small tensor (itself for one)."""
    if processes.world > 1:
        collective(processes, "a sum", lambda: dist.all_reduce(values))
    return values


def gathered(values: Tensor, processes: Processes, what: str) -> Tensor:
    """[world, *values.shape] on the CPU: every rank's `values` (a small tensor, the same shape in each)."""
    device = processes.device if dist.get_backend() == "nccl" else torch.device("cpu")
    table = [torch.empty_like(values, device=device) for _ in range(processes.world)]
    collective(processes, what, lambda: dist.all_gather(table, values.to(device)))
    return torch.stack(table).cpu()


def value_hash(value: object) -> int:
    """A 63-bit hash of a JSON-able value, the same in every process (Python's hash() is salted per process)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def agree(settings: dict[str, object], processes: Processes) -> None:
    """InputError in every process unless all ranks hold the same settings; it names the first that differs
    and each rank's value of it.

    Each rank hashes each setting; all hashes are gathered ([world, n] int64, no pickling), so every rank
    sees the same table; the values of the one setting named are then gathered as UTF-8 bytes."""
    if processes.world == 1:
        return
    names = sorted(settings)
    mine = torch.tensor([value_hash([name, settings[name]]) for name in names], dtype=torch.int64)
    hashes = gathered(mine, processes, "the settings check")  # [world, n]
    differs = (hashes != hashes[0]).any(dim=0).nonzero()
    if not len(differs):
        return
    name = names[int(differs[0])]
    shown = repr(json.loads(json.dumps(settings[name], default=str)))  # a Path as its text, a tuple as a list
    text = (shown if len(shown) <= 60 else shown[:57] + "...").encode()
    values = gathered(torch.tensor(list(text.ljust(VALUE_BYTES, b"\0")), dtype=torch.uint8), processes,
                      "the settings check")
    ranks: dict[str, list[int]] = {}
    for rank, row in enumerate(values.tolist()):
        ranks.setdefault(bytes(row).rstrip(b"\0").decode(errors="replace"), []).append(rank)
    held = ", ".join(f"{value} on rank{'s' if len(on) > 1 else ''} {', '.join(map(str, on))}"
                     for value, on in ranks.items())
    raise InputError(f"the ranks were started with different {name} ({held}): launch every process with the "
                     f"same options")
