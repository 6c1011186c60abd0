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
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from safetensors import SafetensorError

from ..errors import OutputError
from .files import umask

CHECKPOINT_LINK = "checkpoint"  # DIR/checkpoint -> the current checkpoint folder
MODEL_FILES = ("config.json", "vocab.json", "merges.txt", "model.safetensors")  # linked from DIR, in writing order
CHECKPOINT_FOLDER = re.compile(r"\.?(step-[0-9]+|model)(\.[0-9]+)?(\.tmp)?")  # our folders, current or abandoned


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
    """Make `link` a symbolic link to `target` in one atomic step (a new link renamed over the old path)."""
    temporary = link.with_name(f".{link.name}.new")
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, link)


def current_checkpoint(folder: Path) -> Path | None:
    """The checkpoint folder DIR/checkpoint points at, if any."""
    link = folder / CHECKPOINT_LINK
    return link.resolve() if link.is_symlink() and link.is_dir() else None


def holds_checkpoint(folder: Path) -> bool:
    """True when `folder` holds a checkpoint (ours, or any model.safetensors)."""
    return os.path.lexists(folder / CHECKPOINT_LINK) or os.path.lexists(folder / "model.safetensors")


def write_checkpoint(folder: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Write one checkpoint: `write(unit)` fills a temporary folder, which is renamed to DIR/name (name.1, … if
    taken) and made current by replacing the DIR/checkpoint link; older checkpoint folders are then removed.

    SIGINT and SIGTERM wait until the checkpoint is complete; any error leaves DIR as it was. Returns the
    new checkpoint folder."""
    unit = folder / f".{name}.tmp"
    try:
        with signals_held():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(unit, ignore_errors=True)  # left by a run killed while writing
            unit.mkdir(mode=0o777 & ~umask())
            write(unit)
            final = next(folder / f"{name}{suffix}" for suffix in ("", *(f".{i}" for i in range(1, 100)))
                         if not os.path.lexists(folder / f"{name}{suffix}"))
            os.rename(unit, final)
            replace_link(folder / CHECKPOINT_LINK, final.name)  # the moment the new checkpoint becomes DIR's
            for file in MODEL_FILES:
                link = folder / file
                if not (link.is_symlink() and os.readlink(link) == f"{CHECKPOINT_LINK}/{file}"):
                    replace_link(link, f"{CHECKPOINT_LINK}/{file}")
            remove_stale_checkpoints(folder)
    except (OSError, SafetensorError) as error:  # a full disk, a read-only folder: the previous one untouched
        shutil.rmtree(unit, ignore_errors=True)
        reason = getattr(error, "strerror", None) or " ".join(str(error).split())
        raise OutputError(f"cannot write a checkpoint into {folder}: {reason}") from None
    except BaseException:
        shutil.rmtree(unit, ignore_errors=True)
        raise
    return final


def remove_stale_checkpoints(folder: Path) -> None:
    """Remove every checkpoint folder of ours in `folder` but the current one (old, abandoned or half written)."""
    current = current_checkpoint(folder)
    for entry in folder.iterdir():
        if CHECKPOINT_FOLDER.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink() \
                and entry.resolve() != current:
            shutil.rmtree(entry, ignore_errors=True)
