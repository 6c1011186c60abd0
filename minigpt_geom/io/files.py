"""Files in and out. Reading: only regular files, at most a stated number of bytes, so that a FIFO or a device
named as an input can neither hang a command nor fill its memory. Writing: all or nothing, so that a failed
write never leaves a truncated file or destroys a good one, with the permissions open() would have given."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from ..errors import InputError, OutputError

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
    """The permissions a write to `path` should leave: those of the file it replaces, else what open() gives
    a new file (0o666 without the umask's bits: 0o644 under umask 022)."""
    try:
        info = os.lstat(path)  # a link is replaced, not written through: it lends no mode
    except OSError:
        info = None
    if info is not None and stat.S_ISREG(info.st_mode):
        return stat.S_IMODE(info.st_mode)
    return 0o666 & ~umask()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(temporary)` on a new file beside `path`, then move it into place with os.replace.

    The rename is atomic on one file system, so readers see the old file or the new one, never half of one;
    it replaces a symbolic link at `path` instead of writing through it. The file gets the mode of the one it
    replaces, or the umask's (mkstemp makes it 0600). OS errors, and the safetensors library's own error type
    (a full disk while it writes), become OutputError."""
    from safetensors import SafetensorError  # the Rust binding alone: no torch

    path = Path(path)
    try:
        # the temporary keeps path's suffix: numpy and matplotlib choose the format (or add one) by it
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(fd)
    temporary = Path(name)
    try:
        write(temporary)
        os.chmod(temporary, new_file_mode(path))  # after write: some writers replace the file they are given
        os.replace(temporary, path)
    except (OSError, SafetensorError) as error:
        raise OutputError(f"cannot write {path}: {getattr(error, 'strerror', None) or error}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text to `path` atomically."""
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to `path` atomically."""
    return atomic_write(path, lambda temporary: temporary.write_bytes(data))
