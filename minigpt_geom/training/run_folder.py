"""A run owns its output folder, and only what it wrote there (io/owned.py): DIR/run.lock keeps a second
process out from start to end (io/files.py's folder_lock, held by every command that writes a run or model
folder: init, train, remove-ln), and a folder that already holds a run or a model is replaced only when asked
(resume it, or overwrite it).

The lock is `filelock`'s (flock on POSIX, LockFileEx on Windows): the operating system releases it however the
process ends, so a killed run leaves no stale lock behind.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..io.checkpoint_folder import CHECKPOINT_LINK, MODEL_FILES, holds_checkpoint
from ..io.owned import check_owned


def check_new_output(folder: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """InputError when `folder` holds a checkpoint that would be replaced without resume or overwrite;
    OutputError when a file there that a checkpoint replaces (config.json, the `checkpoint` link …) is not ours."""
    if holds_checkpoint(folder) and not (resume or overwrite):
        what = "a run" if (folder / CHECKPOINT_LINK / "trainer_state.json").is_file() else "a model"
        raise InputError(f"{folder} already holds {what}: resume it, overwrite it, or choose another folder")
    if folder.is_dir():
        check_owned(folder, (CHECKPOINT_LINK, *MODEL_FILES))
