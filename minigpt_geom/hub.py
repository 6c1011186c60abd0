"""Where files come from: a local path, the offline `weights/` drop-in, or the Hugging Face hub.

`source` is one of
- a preset name (`gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`): `weights/<name>/` if present, else the
  hub repo `openai-community/<name>`;
- a hub repo id (`owner/name`);
- a local directory holding the files;
- a single file (only for callers that accept one, like the weights loader).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import WeightsNotFoundError

PRESET_REPOS = {name: f"openai-community/{name}" for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")}


def drop_in_dirs(name: str) -> list[Path]:
    """Folders searched for an offline copy of preset `name`, in order."""
    roots = []
    if os.environ.get("MINIGPT_GEOM_WEIGHTS"):
        roots.append(Path(os.environ["MINIGPT_GEOM_WEIGHTS"]))
    roots.append(Path.cwd() / "weights")
    roots.append(Path(__file__).resolve().parent.parent / "weights")  # editable install: repo/weights
    return [root / name for root in roots]


def is_hub_id(source: str) -> bool:
    """True for `owner/name` strings that are not an existing local path."""
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not Path(source).exists() and not source.startswith(".")


def resolve_file(source: str | os.PathLike, filename: str, *, required: bool = True) -> Path | None:
    """Return a local path to `filename` of `source`, downloading it from the hub if needed."""
    path = Path(source)
    if path.is_dir():
        candidate = path / filename
        if candidate.is_file():
            return candidate
        if required:
            raise WeightsNotFoundError(f"{filename} not found in directory {path}")
        return None
    source = str(source)
    if source in PRESET_REPOS:
        for folder in drop_in_dirs(source):
            if (folder / filename).is_file():
                return folder / filename
        return _download(PRESET_REPOS[source], filename, required=required, preset=source)
    if is_hub_id(source):
        return _download(source, filename, required=required, preset=None)
    presets = ", ".join(PRESET_REPOS)
    raise WeightsNotFoundError(
        f"{source!r} is neither an existing file or directory, a preset ({presets}) nor a hub id (owner/name)"
    )


def _download(repo_id: str, filename: str, *, required: bool, preset: str | None) -> Path | None:
    """hf_hub_download with its standard cache, progress bar and resume; errors rewritten to say what to do."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename))
    except LocalEntryNotFoundError:  # offline, or no network, and not in the cache (check before its base class)
        if not required:
            return None
        where = f", or put it at weights/{preset}/{filename}" if preset else ""
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
        why = "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache" if offline else (
            "the hub could not be reached and it is not in the Hugging Face cache")
        raise WeightsNotFoundError(
            f"could not get {filename} of {repo_id}: {why}. Run once with network access to fill the cache{where}, "
            f"or pass a local directory or .safetensors file as the source."
        ) from None
    except EntryNotFoundError:
        if not required:
            return None
        raise WeightsNotFoundError(f"the hub repo {repo_id} has no file {filename}") from None
    except RepositoryNotFoundError:
        raise WeightsNotFoundError(f"no hub repo {repo_id!r} (or it is private: log in with `hf auth login`)") from None
    except OSError as error:  # HTTP errors, disk full, permissions
        if not required:
            return None
        raise WeightsNotFoundError(f"could not get {filename} of {repo_id}: {error}") from None
