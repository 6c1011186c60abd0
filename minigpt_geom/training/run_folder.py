"""A run owns its output folder: DIR/run.lock keeps a second process out from start to end, and a folder that
already holds a run or a model is replaced only when asked (resume it, or overwrite it).

The lock is `filelock`'s (flock on POSIX, LockFileEx on Windows): the operating system releases it however the
process ends, so a killed run leaves no stale lock behind.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from ..errors import InputError, OutputError
from ..io.checkpoint_folder import CHECKPOINT_LINK, holds_checkpoint

LOCK_FILE = "run.lock"


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold DIR/run.lock for the block; OutputError if another process holds it."""
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path, mode=0o666, blocking=False)  # 0o666 less the umask, as any file we create
        lock.acquire()
    except Timeout:
        raise OutputError(f"another process is running in {folder} (it holds {path}): "
                          f"wait for it, or give another -o") from None
    except OSError as error:
        raise OutputError(f"cannot create {path}: {error.strerror or error}") from None
    try:
        yield
    finally:
        lock.release()


def check_new_output(folder: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """InputError when `folder` holds a checkpoint that would be replaced without resume or overwrite."""
    if holds_checkpoint(folder) and not (resume or overwrite):
        what = "a run" if (folder / CHECKPOINT_LINK / "trainer_state.json").is_file() else "a model"
        raise InputError(f"{folder} already holds {what}: resume it, overwrite it, or choose another folder")
