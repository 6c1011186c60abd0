"""Files in and out. Reading: only regular files, at most a stated number of bytes, so that a FIFO or a device
named as an input can neither hang a command nor fill its memory. Writing: all or nothing, so that a failed
write never leaves a truncated file or destroys a good one, with the permissions open() would have given; a
device, a FIFO or a symbolic link at the path is written through or refused, never replaced."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from ..errors import InputError, MiniGPTGeomError, OutputError

KINDS = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device",
         stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}


# ---- reading -----------------------------------------------------------------------------------------------

def not_regular(mode: int) -> str | None:
    """What a file of this st_mode is when it is not a regular file ("a FIFO (named pipe)", …); None if it is."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in KINDS.items() if test(mode)), "not a regular file")


def regular_file(path: str | os.PathLike, max_bytes: int, *, error: type[Exception] = InputError) -> Path:
    """`path` if it is a regular file of at most `max_bytes` (stat follows links and never blocks), else `error`.

    For readers that open the file themselves (safetensors, zipfile); OSErrors such as a missing file pass."""
    path = Path(path)
    info = path.stat()
    if kind := not_regular(info.st_mode):
        raise error(f"{path} is {kind}, not a regular file")
    if info.st_size > max_bytes:
        raise error(f"{path} is {info.st_size:,} bytes, more than the {max_bytes:,} this reader accepts")
    return path


def open_regular(path: str | os.PathLike, *, error: type[Exception] = InputError) -> BinaryIO:
    """`path` opened for reading in binary if it is a regular file, else `error`; OSErrors (a missing file …) pass.

    Opened non-blocking and checked on the open descriptor (fstat), so a FIFO or a device is refused at once,
    even one that replaced a file after it was listed (a blocking open() of a FIFO waits for ever for a writer).
    A regular file reads the same either way; the flag is cleared for ordinary reads."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if kind := not_regular(os.fstat(fd).st_mode):
            raise error(f"{path} is {kind}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_bytes(path: str | os.PathLike, max_bytes: int, *, error: type[Exception] = InputError) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, else `error`; OSErrors (a missing file …) pass.

    Opened by open_regular (never waiting on a FIFO); read up to max_bytes + 1 whatever st_size says."""
    path = Path(path)
    with open_regular(path, error=error) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error(f"{path} is more than {max_bytes:,} bytes, the most this reader accepts")
    return data


def read_text(path: str | os.PathLike, max_bytes: int, *, error: type[Exception] = InputError) -> str:
    """read_bytes decoded as UTF-8 (UnicodeDecodeError passes, for the caller to name the file)."""
    return read_bytes(path, max_bytes, error=error).decode("utf-8")


def parse_json(text: str | bytes) -> object:
    """json.loads, every way it can fail a ValueError for the caller to name the file: malformed JSON, an integer
    of more than 4300 digits, and nesting deeper than the parser's recursion ([[[[… 100,000 deep)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


# ---- writing -----------------------------------------------------------------------------------------------
# One writer for every output. What a path names decides how it is written, never replaced by something else:
#   nothing yet, or a regular file     a new file beside it, renamed over it (readers see the old or the new)
#   a symbolic link                    followed: the file it points at is written by these same rules
#   a character device, a FIFO         written through (`-o /dev/null`, `-o /dev/stdout`), the output complete
#                                      in a temporary file first; a FIFO only while a reader has it open
#   a directory, a block device, …     refused: one line, nothing written


def umask() -> int:
    """This process's umask: from /proc on Linux, else read by setting it and putting it back (the portable way,
    which another thread creating a file at that instant could notice)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def new_file_mode(path: Path) -> int:
    """The permissions a write to `path` should leave: those of the regular file it replaces (links followed),
    else what open() gives a new file (0o666 without the umask's bits: 0o644 under umask 022)."""
    try:
        info = os.stat(path)
    except OSError:
        info = None
    if info is not None and stat.S_ISREG(info.st_mode):
        return stat.S_IMODE(info.st_mode)
    return 0o666 & ~umask()


def output_target(path: str | os.PathLike) -> tuple[Path, bool]:
    """(where, through): the file a write to `path` lands in, symbolic links followed, and whether it is written
    through (a character device or a FIFO) rather than replaced (a regular file, or nothing yet); OutputError,
    one line, for anything else."""
    if not os.fspath(path):
        raise OutputError("an empty path names no file: give a file name")
    path = Path(path)
    try:
        real = Path(os.path.realpath(path))  # a dangling link: where it points, created there
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real, False
    except OSError as error:  # a loop of links, a path through a file
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    if stat.S_ISREG(mode):
        return real, False
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return real, True
    kind = "a directory" if stat.S_ISDIR(mode) else not_regular(mode)
    raise OutputError(f"cannot write {path}: it is {kind}, which is never replaced: give a file name")


def write_through(source: Path, target: Path) -> None:
    """Copy the complete file `source` into the device or FIFO `target` (opened non-blocking: a FIFO without
    a reader is refused instead of waiting for one)."""
    try:
        fd = os.open(target, os.O_WRONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        if error.errno == errno.ENXIO:
            raise OutputError(f"cannot write {target}: it is a FIFO (named pipe) that no process reads") from None
        raise
    os.set_blocking(fd, True)  # now open: write at the reader's pace
    with os.fdopen(fd, "wb") as out, source.open("rb") as f:
        shutil.copyfileobj(f, out)


def place(source: Path, path: str | os.PathLike) -> Path:
    """Move the complete file `source` to `path` by output_target's rules; returns where it landed."""
    real, through = output_target(path)
    if through:
        write_through(source, real)
        source.unlink()
    else:
        os.chmod(source, new_file_mode(real))  # after writing: some writers replace the file they are given
        try:
            os.replace(source, real)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            atomic_write(real, lambda temporary: shutil.copyfile(source, temporary))  # a link to another disk
            source.unlink()
    return real


def output_error(path: str | os.PathLike, error: Exception) -> OutputError:
    """An OS error (or the safetensors library's own, a full disk while it writes) as one line naming `path`."""
    if isinstance(error, OutputError):
        return error
    return OutputError(f"cannot write {path}: {getattr(error, 'strerror', None) or error}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(temporary)` on a new file, then put it at `path` by output_target's rules (renamed over a
    regular file, so readers see the old file or the new one, never half of one). The file gets the mode of the
    one it replaces, or the umask's (mkstemp makes it 0600). Errors become OutputError; `path` stays as it was.
    Returns `path`."""
    from safetensors import SafetensorError  # the Rust binding alone: no torch

    real, through = output_target(path)  # refused before any work
    path = Path(path)
    try:
        # beside the target (a rename within one file system); a device's copy waits in the temporary folder.
        # The temporary keeps path's suffix: numpy and matplotlib choose the format (or add one) by it.
        fd, name = tempfile.mkstemp(dir=None if through else real.parent, prefix=f".{path.name}.",
                                    suffix=f".tmp{path.suffix}")
    except OSError as error:
        raise output_error(path, error) from None
    os.close(fd)
    temporary = Path(name)
    try:
        write(temporary)
        place(temporary, path)
    except (OSError, SafetensorError) as error:
        raise output_error(path, error) from None
    finally:
        temporary.unlink(missing_ok=True)
    return path


def move_together(moves: list[tuple[Path, str | os.PathLike]], scratch: Path) -> None:
    """Put each complete file `source` at its `target` (place's rules), all of them or none: every target is
    checked before the first is touched, the regular files replaced are kept in the folder `scratch` until the
    last one is in, and put back if one fails. Devices and FIFOs are written last: what went out cannot return."""
    targets = [(source, target, *output_target(target)) for source, target in moves]  # refusals: before any move
    done: list[tuple[Path, Path | None]] = []  # (a replaced target, its previous file kept aside, or None)
    try:
        for i, (source, target, real, through) in enumerate(sorted(targets, key=lambda move: move[3])):
            if not through:
                done.append((real, keep_aside(real, scratch / f".previous.{i}")))
            place(source, real)
    except (OSError, MiniGPTGeomError) as error:
        for real, previous in reversed(done):
            if previous is None:
                real.unlink(missing_ok=True)
            else:
                os.replace(previous, real)
        raise output_error(target, error) from None


def keep_aside(path: Path, aside: Path) -> Path | None:
    """A second name `aside` for the regular file at `path` (None if there is none), to put it back from: a
    hard link on one file system, else a copy."""
    if not path.is_file():
        return None
    try:
        os.link(path, aside)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(path, aside)
    return aside


@contextmanager
def folder_lock(folder: str | os.PathLike, name: str) -> Iterator[Path]:
    """Hold the lock file folder/name while the block runs (filelock's flock: the kernel releases it however the
    process ends), creating the folder; OutputError, one line, if another process (or thread) holds it."""
    import filelock  # 30 ms: imported by the commands that write a folder, not by --help

    folder = Path(folder)
    # one lock object per file in this process, re-entered by the thread that holds it (a run that writes a
    # checkpoint), refused to any other; 0o666 less the umask, as any file we create
    lock = filelock.FileLock(folder / name, timeout=0, mode=0o666, is_singleton=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except filelock.Timeout:
        raise OutputError(f"another process is running in {folder} (it holds {folder / name}): wait for it to "
                          f"end, or give another folder") from None
    except OSError as error:  # a file where the folder should be, a read-only parent
        raise OutputError(f"cannot lock the folder {folder}: {error.strerror or error}") from None
    try:
        yield folder
    finally:
        lock.release()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text to `path` atomically."""
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to `path` atomically."""
    return atomic_write(path, lambda temporary: temporary.write_bytes(data))
