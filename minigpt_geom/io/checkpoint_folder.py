"""One checkpoint, one unit: a folder written whole, then made current by one atomic step (Hugging Face Trainer
and torch.distributed.checkpoint do the same):

    DIR/.step-000200.tmp/    written file by file: config.json before model.safetensors, then the rest
    DIR/step-000200/         … renamed once complete
    DIR/checkpoint           a symbolic link, replaced atomically by one pointing at step-000200/
    DIR/model.safetensors    links through checkpoint/ (config.json, vocab.json, merges.txt likewise), so
                             DIR itself loads as a GPT-2 folder, always one checkpoint's files together

The previous checkpoint folder is removed only after the link points at the new one: a kill at any moment
leaves DIR on the old checkpoint or the new, never a mix. What goes inside is the caller's (model_files.py
writes a model's files, training/optimizer_state.py a run's state beside them).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from safetensors import SafetensorError

from ..errors import OutputError
from .files import folder_lock, umask
from .owned import check_owned, free_name, owned, record

CHECKPOINT_LINK = "checkpoint"  # DIR/checkpoint -> the current checkpoint folder
MODEL_FILES = ("config.json", "vocab.json", "merges.txt", "model.safetensors")  # linked from DIR, in writing order
CHECKPOINT_FOLDER = re.compile(r"\.?(step-[0-9]+|model)(\.[0-9]+)?(\.tmp)?")  # our folders' names (owned.py's)
LOCK_FILE = "run.lock"  # DIR's lock: held by a run from start to end, and while a checkpoint is written


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (a checkpoint is finished), then act as they would have.

    Python runs signal handlers in the main thread only, so a handler that notes the signal holds it whatever
    thread the kernel delivered it to (a signal mask would hold it for one thread alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {number: signal.signal(number, lambda number, frame: received.append(number))
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        if received:
            signal.raise_signal(received[0])


def replace_link(link: Path, target: str) -> None:
    """Make `link` a symbolic link to `target` in one atomic step (a new link, under a name nothing has, renamed
    over the old path)."""
    temporary = link.with_name(f".{link.name}.{secrets.token_hex(4)}.new")
    os.symlink(target, temporary)  # fails rather than replace anything
    os.replace(temporary, link)


def current_checkpoint(folder: Path) -> Path | None:
    """The checkpoint folder DIR/checkpoint points at, if any."""
    link = folder / CHECKPOINT_LINK
    return link.resolve() if link.is_symlink() and link.is_dir() else None


def holds_checkpoint(folder: Path) -> bool:
    """True when `folder` holds a checkpoint: our `checkpoint` link, or any model.safetensors that can be read
    (not a link left dangling by a kill before its first checkpoint was made current)."""
    return os.path.lexists(folder / CHECKPOINT_LINK) or (folder / "model.safetensors").exists()


def write_checkpoint(folder: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Write one checkpoint: `write(unit)` fills a temporary folder, which is renamed to DIR/name (name.1, … if
    taken) and made current by replacing the DIR/checkpoint link, the last step (the model files' links through
    it are made first); the older checkpoint folders of ours are then removed (owned.py: nothing else is).

    Holds DIR's lock (reentrant: a run holds it already); SIGINT and SIGTERM wait until the checkpoint is
    complete; any error leaves DIR as it was. Returns the new checkpoint folder."""
    unit = None
    try:
        with folder_lock(folder, LOCK_FILE), signals_held():
            check_owned(folder, (CHECKPOINT_LINK, *MODEL_FILES))  # a file of the user's there: refused, untouched
            remove_stale_checkpoints(folder)  # a killed run's half-written unit, if any
            unit = free_name(folder, f".{name}", ".tmp")
            record(folder, added=(unit.name,))
            unit.mkdir(mode=0o777 & ~umask())
            write(unit)
            final = free_name(folder, name)
            record(folder, added=(final.name,))
            os.rename(unit, final)
            links = [file for file in MODEL_FILES if not (folder / file).is_symlink()
                     or os.readlink(folder / file) != f"{CHECKPOINT_LINK}/{file}"]
            record(folder, added=(CHECKPOINT_LINK, *links), removed=(unit.name,))
            for file in links:  # dangling until the checkpoint link exists: nothing reads them before
                replace_link(folder / file, f"{CHECKPOINT_LINK}/{file}")
            replace_link(folder / CHECKPOINT_LINK, final.name)  # the moment the new checkpoint becomes DIR's
            remove_stale_checkpoints(folder)
    except (OSError, SafetensorError) as error:  # a full disk, a read-only folder: the previous one untouched
        remove_unit(folder, unit)
        if isinstance(error, OutputError):
            raise
        reason = getattr(error, "strerror", None) or " ".join(str(error).split())
        raise OutputError(f"cannot write a checkpoint into {folder}: {reason}") from None
    except BaseException:
        remove_unit(folder, unit)
        raise
    return final


def remove_unit(folder: Path, unit: Path | None) -> None:
    """Remove the unfinished checkpoint folder `unit` (ours: recorded before it was made), if there is one."""
    if unit is not None and unit.name in owned(folder):
        shutil.rmtree(unit, ignore_errors=True)
        record(folder, removed=(unit.name,))


def remove_stale_checkpoints(folder: Path) -> None:
    """Remove every checkpoint folder of ours in `folder` but the current one (old, abandoned or half written):
    only what the manifest lists, whatever else looks like one."""
    current = current_checkpoint(folder)
    stale = [name for name in owned(folder) if CHECKPOINT_FOLDER.fullmatch(name)
             and (current is None or (folder / name).resolve() != current)]
    for name in stale:
        if (folder / name).is_dir() and not (folder / name).is_symlink():
            shutil.rmtree(folder / name, ignore_errors=True)
    if stale:
        record(folder, removed=tuple(stale))
