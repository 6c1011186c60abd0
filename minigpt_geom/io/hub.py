"""Where files come from: a local path, the offline `weights/` drop-in, or the Hugging Face hub.

`source` is one of
- a preset name (`gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`): the folder `weights/<name>/` if it exists,
  else the hub repo `openai-community/<name>`;
- a hub repo id (`owner/name`);
- a local directory holding the files;
- a single file (only for callers that accept one, like the weights loader).

A local folder (a drop-in included) is never completed from the hub: what it lacks is reported at once. A
string that is or looks like a path (`./x`, `~/x`, `a/b/c`, a broken link) is never sent to the hub.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import WeightsNotFoundError

PRESET_REPOS = {name: f"openai-community/{name}" for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")}
# Files one loader reads together: when one is missing, the others missing with it are named in the same error.
COMPANIONS = {"vocab.json": ("vocab.json", "merges.txt"), "merges.txt": ("vocab.json", "merges.txt")}
PROBE_TIMEOUT_S = 5  # one HEAD request; hf_hub_download itself retries an unreachable hub for ~25 s a file


def drop_in_dirs(name: str) -> list[Path]:
    """Folders searched for an offline copy of preset `name`, in order, each once (run from the repository's
    root, ./weights and the repository's weights/ are one folder)."""
    roots = []
    if os.environ.get("MINIGPT_GEOM_WEIGHTS"):
        roots.append(Path(os.environ["MINIGPT_GEOM_WEIGHTS"]))
    roots.append(Path.cwd() / "weights")
    roots.append(Path(__file__).resolve().parents[2] / "weights")  # editable install: repo/weights (repo/minigpt_geom/io)
    folders = [root / name for root in roots]
    return [folder for i, folder in enumerate(folders) if folder.resolve() not in {f.resolve() for f in folders[:i]}]


def looks_like_path(source: str) -> bool:
    """True when `source` exists on disk (even as a broken link or a symlink loop) or is spelled like a path."""
    return (os.path.lexists(source) or source.startswith((".", "~", "/")) or source.count("/") > 1
            or "\\" in source)  # a hub id is exactly owner/name; a backslash separates Windows paths


def path_problem(source: str) -> str:
    """Why an existing-looking path `source` cannot serve as a folder of files."""
    if Path(source).exists():
        return "it is not a directory"
    return "it is a broken link or a symlink loop" if os.path.lexists(source) else "no such file or directory"


def is_hub_id(source: str) -> bool:
    """True for an `owner/name` the hub accepts that does not look like a local path."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if looks_like_path(source) or source.count("/") != 1:
        return False
    try:
        validate_repo_id(source)  # the hub's own rules: characters, length, no `--` or `..`
    except HFValidationError:
        return False
    return True


def local_folder(source: str | os.PathLike) -> Path | None:
    """The local folder `source` names: a directory, or a preset's drop-in folder; None for the hub."""
    if Path(source).is_dir():
        return Path(source)
    if str(source) in PRESET_REPOS:
        return next((folder for folder in drop_in_dirs(str(source)) if folder.is_dir()), None)
    return None


def local_file(folder: Path, filename: str, *, required: bool, drop_in: bool) -> Path | None:
    """folder/filename if it exists; None if absent and optional; else a WeightsNotFoundError."""
    candidate = folder / filename
    if os.path.lexists(candidate):  # even a directory or a broken link: its reader says what is wrong with it
        return candidate
    if not required:
        return None
    missing = [name for name in COMPANIONS.get(filename, (filename,)) if not (folder / name).is_file()]
    hint = " (a drop-in folder replaces the hub: add the files or remove the folder)" if drop_in else ""
    raise WeightsNotFoundError(f"{' and '.join(missing)} not found in directory {folder}{hint}")


def resolve_file(source: str | os.PathLike, filename: str, *, required: bool = True) -> Path | None:
    """Return a local path to `filename` of `source`, downloading it from the hub if needed."""
    folder = local_folder(source)
    if folder is not None:
        return local_file(folder, filename, required=required, drop_in=str(source) in PRESET_REPOS)
    source = str(source)
    if source in PRESET_REPOS:
        return _download(PRESET_REPOS[source], filename, required=required, preset=source)
    if looks_like_path(source):
        raise WeightsNotFoundError(f"{source} is not a directory holding {filename}: {path_problem(source)}")
    if is_hub_id(source):
        return _download(source, filename, required=required, preset=None)
    presets = ", ".join(PRESET_REPOS)
    raise WeightsNotFoundError(
        f"{source!r} is neither an existing file or directory, a preset ({presets}) nor a hub id (owner/name)"
    )


def hub_unreachable(repo_id: str, filename: str) -> str | None:
    """None when the hub answers one HEAD request for the file (even "not found"), else the network error."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=PROBE_TIMEOUT_S)  # no retries
    except HfHubHTTPError:
        return None  # the hub answered (404, 401, …): hf_hub_download reports it properly
    except Exception as error:  # whatever the HTTP client raises when no answer comes: DNS, refused, timeout
        return " ".join(str(error).split()) or type(error).__name__
    return None


def not_cached(repo_id: str, filenames: tuple[str, ...]) -> list[str]:
    """Those of `filenames` the Hugging Face cache does not hold for `repo_id` (no network)."""
    from huggingface_hub import try_to_load_from_cache

    return [name for name in filenames if not isinstance(try_to_load_from_cache(repo_id, name), str)]


def _download(repo_id: str, filename: str, *, required: bool, preset: str | None) -> Path | None:
    """hf_hub_download with its standard cache, progress bar and resume; errors rewritten to say what to do."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = constants.HF_HUB_OFFLINE  # read by huggingface_hub when it is imported
    if not offline and not_cached(repo_id, (filename,)):
        # Not in the cache, so hf_hub_download must reach the hub and would retry for ~25 s if it cannot.
        error = hub_unreachable(repo_id, filename)
        if error is not None:
            if not required:
                return None
            raise not_found(repo_id, filename, preset, f"the hub could not be reached ({error})", offline)
    try:
        return Path(hf_hub_download(repo_id, filename))
    except LocalEntryNotFoundError:  # offline, or no network, and not in the cache (check before its base class)
        if not required:
            return None
        why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        raise not_found(repo_id, filename, preset, why, offline) from None
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


def places_looked(preset: str) -> str:
    """Where an offline copy of `preset` was looked for, every place named (an unset $MINIGPT_GEOM_WEIGHTS too)."""
    folders = [str(folder) for folder in drop_in_dirs(preset)]
    if not os.environ.get("MINIGPT_GEOM_WEIGHTS"):
        folders.insert(0, f"$MINIGPT_GEOM_WEIGHTS/{preset} (the variable is not set)")
    return ", ".join(folders)


def not_found(repo_id: str, filename: str, preset: str | None, why: str, offline: bool) -> WeightsNotFoundError:
    """The error for required files that are neither in the cache nor downloadable: all of them, every place
    looked in, and what to do."""
    from huggingface_hub import constants

    missing = not_cached(repo_id, COMPANIONS.get(filename, (filename,))) or [filename]
    files = " and ".join(missing)
    them = "it" if len(missing) == 1 else "them"
    looked = f"the Hugging Face cache {constants.HF_HUB_CACHE}"
    put = ""
    if preset:
        looked = f"{places_looked(preset)} and {looked}"
        put = f" put {them} in weights/{preset}/ or $MINIGPT_GEOM_WEIGHTS/{preset}/,"
    skip = "" if offline else " Set HF_HUB_OFFLINE=1 to skip the hub when working offline."
    return WeightsNotFoundError(
        f"could not get {files} of {repo_id}: {why}, and {'it is' if len(missing) == 1 else 'they are'} in none of "
        f"{looked}. To fix:{put} run once with network access to fill the cache, or pass a local folder or "
        f".safetensors file as the source.{skip}"
    )
