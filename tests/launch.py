"""Starting the CLI under torchrun (gloo, CPU processes) from a test, and finding one of its workers."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python that imports this checkout, one thread per process (2 cores shared)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", **extra}


def torchrun(*argv: str, processes: int = 2, log_dir: Path | None = None) -> list[str]:
    """`torchrun --nproc_per_node N --standalone -m minigpt_geom ARGV`; with `log_dir`, each worker's stderr goes
    to its own file there (worker_stderr reads it), apart from the agent's own lines."""
    logs = ["--log-dir", str(log_dir), "--redirects", "2"] if log_dir is not None else []
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--standalone",
            *logs, "-m", "minigpt_geom", *argv]


def worker_stderr(log_dir: Path, local_rank: int) -> str:
    """What the worker of `local_rank` wrote on stderr (torchrun's --log-dir layout: RUN/attempt_0/RANK/)."""
    return "".join(path.read_text() for path in log_dir.glob(f"*/attempt_0/{local_rank}/stderr.log"))


def worker_pid(launcher_pid: int, rank: int) -> int:
    """The process id of the worker of `rank` among the children of torchrun's agent (Linux: read from /proc)."""
    for child in Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(child)
    raise LookupError(f"no worker of rank {rank} under process {launcher_pid}")


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """What torchrun gives a worker, for starting the ranks by hand (each with its own options)."""
    return child_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                     MASTER_PORT=str(port))


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
