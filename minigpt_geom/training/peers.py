"""Which torchrun rank was lost: the process ids of the ranks, recorded at the start, looked at when the group breaks.

gloo says only "Connection closed by peer [127.0.0.1]:35721", an address and not a rank, and torchrun's agent,
once it sees a worker die, stops the others with SIGTERM. A process id names the rank: a rank on this machine
whose process is gone (or is a zombie its parent has not yet collected) is the one lost. A rank on another
machine cannot be looked at this way, so it is never named; the message then says what is known.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path


def machine() -> str:
    """This machine and process-id namespace: two ranks' process ids can be compared only within one."""
    namespace = Path("/proc/self/ns/pid")
    return f"{socket.gethostname()} {os.readlink(namespace) if namespace.is_symlink() else ''}"


def alive(pid: int) -> bool:
    """True while process `pid` runs; a zombie (ended, not yet collected by its parent) is not alive."""
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # the id was reused by another user's process: ours is gone
        return False
    try:  # /proc/PID/stat: "pid (name) state …"; the name may hold spaces and parentheses
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return not Path("/proc").is_dir()  # no /proc (macOS): the process exists, a zombie cannot be told
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def lost_ranks(local_peers: tuple[tuple[int, int], ...], wait: float = 0.0) -> list[tuple[int, int]]:
    """(rank, process id) of each rank on this machine, of `local_peers` (rank, process id), that has ended;
    looked at again for up to `wait` seconds while none has (a killed process closes its sockets, which fails
    the others' collective, a moment before it is seen to end)."""
    deadline = time.monotonic() + wait
    while True:
        lost = [(rank, pid) for rank, pid in local_peers if not alive(pid)]
        if lost or not local_peers or time.monotonic() >= deadline:
            return lost
        time.sleep(0.05)
