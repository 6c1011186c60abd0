"""What this package wrote in a folder the user named (`-o DIR`), and so may replace or delete: nothing else.

    DIR/.minigpt_geom_manifest.json    {"entries": ["checkpoint", "config.json", "step-000200", …]}

An entry is recorded before it is created and dropped after it is removed, so that a kill in between leaves at
most a name recorded for nothing, never something of ours unrecorded. A folder of the user's that merely looks
like ours (`model/`, `step-5/`, `config.json`) is never in the manifest: it is left alone, or the write refused.
A folder written before manifests existed is adopted by what can only be ours: the `checkpoint` link, the
checkpoint folder it points at, the model files that are links through it, and beside them the run's logs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import OutputError
from .files import parse_json, read_text, write_text

MANIFEST = ".minigpt_geom_manifest.json"
MANIFEST_BYTES = 1 << 20  # a few dozen names
LEGACY_LINKS = ("config.json", "vocab.json", "merges.txt", "model.safetensors")  # through checkpoint/, if ours
LEGACY_LOGS = ("log.csv", "sigma.csv")  # a run's, beside its checkpoint link


def owned(folder: Path) -> set[str]:
    """The names of the entries of `folder` this package wrote (an older run's adopted, see the module doc)."""
    path = folder / MANIFEST
    if not os.path.lexists(path):
        return legacy_entries(folder)
    try:
        entries = parse_json(read_text(path, MANIFEST_BYTES, error=OutputError))["entries"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OutputError(f"{path} is damaged ({error}): move {folder} aside, or give another folder") from None
    if not (isinstance(entries, list) and all(isinstance(name, str) for name in entries)):
        raise OutputError(f"{path} is damaged (its entries are not a list of names): give another folder")
    return set(entries)


def legacy_entries(folder: Path) -> set[str]:
    """What a run folder from before manifests holds of ours: the `checkpoint` link, the folder it points at
    (a name in DIR), the links through it, and the run's logs."""
    link = folder / "checkpoint"
    if not link.is_symlink() or "/" in os.readlink(link):
        return set()
    links = {name for name in LEGACY_LINKS
             if (folder / name).is_symlink() and os.readlink(folder / name) == f"checkpoint/{name}"}
    return {"checkpoint", os.readlink(link), *links, *LEGACY_LOGS}


def record(folder: Path, added: tuple[str, ...] = (), removed: tuple[str, ...] = ()) -> None:
    """Add names to the manifest (before creating them) or drop them (after removing them)."""
    entries = (owned(folder) | set(added)) - set(removed)
    write_text(folder / MANIFEST, json.dumps({"entries": sorted(entries)}, indent=1) + "\n")


def check_owned(folder: Path, names: tuple[str, ...]) -> None:
    """OutputError, one line, when one of `names`, about to be replaced, is there and not this package's."""
    ours = owned(folder)
    foreign = [name for name in names if os.path.lexists(folder / name) and name not in ours]
    if foreign:
        raise OutputError(f"{folder / foreign[0]} was not written by minigpt-geom, so it is never replaced: move "
                          f"it away, or give another folder")


def free_name(folder: Path, stem: str, suffix: str = "") -> Path:
    """folder/stem+suffix, or stem.1+suffix, stem.2+suffix …: the first name nothing has."""
    for i in range(10_000):
        path = folder / f"{stem}{f'.{i}' if i else ''}{suffix}"
        if not os.path.lexists(path):
            return path
    raise OutputError(f"{folder} holds 10,000 entries named {stem}.N{suffix}: give another folder")
