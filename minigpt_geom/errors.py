"""Errors a user can act on: each message names the problem and what to do about it."""


class MiniGPTGeomError(Exception):
    """Base class: the command line prints these as one line, without a traceback."""


class WeightsNotFoundError(MiniGPTGeomError, FileNotFoundError):
    """A checkpoint or tokenizer file could not be found locally or fetched from the hub."""


class CheckpointError(MiniGPTGeomError, ValueError):
    """A checkpoint is unreadable, incomplete, has unexpected tensors, wrong shapes or non-finite values."""


class InputError(MiniGPTGeomError, ValueError):
    """Model input is malformed: wrong dtype or rank, token ids outside the vocabulary, too long.

    `field` names the setting at fault (e.g. "pattern"), for the command line to name its own option."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class OutputError(MiniGPTGeomError, OSError):
    """An output file or folder cannot be written (permissions, a full disk, a path that is not a folder)."""


class MissingDependencyError(MiniGPTGeomError, ImportError):
    """An optional library that one feature needs is not installed; the message names the pip command."""


def import_optional(module: str, feature: str, package: str | None = None, otherwise: str = "") -> object:
    """The module named `module`, or MissingDependencyError: `feature` needs `pip install package`, `otherwise`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = package or module
        raise MissingDependencyError(f"{feature} needs {package}: pip install {package}"
                                     + (f", or {otherwise}" if otherwise else "")) from None


class Note(UserWarning):
    """Something a user should know that is not an error; the command line prints it as one line."""


class LNFreeWarning(Note):
    """A checkpoint with layer norm switched off inside (ε ≥ 1e10) was loaded as the exact norm="none" model.

    The command line prints it as one line; `warnings.simplefilter("ignore", LNFreeWarning)` silences it."""
