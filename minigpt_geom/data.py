"""A corpus as token ids on disk: tokenised once, then read as random windows of a memory-mapped array.

    corpus     a text file, or a folder of them (every UTF-8 file under it, in sorted order)
    ids        each file's ids followed by <|endoftext|>, all files concatenated
    train.bin  the first (1 − val_fraction) of the ids        uint16, flat, read with np.memmap
    val.bin    the last val_fraction of the ids               held out: never trained on
    meta.json  what was tokenised: files (name, size, mtime), the tokenizer's fingerprint, counts

A window of T + 1 consecutive ids starting at i gives the input x = ids[i : i+T] and the targets
y = ids[i+1 : i+T+1]: position t learns to predict the id that follows it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from .analysis.corpus import corpus_files
from .errors import InputError
from .files import atomic_write, write_text
from .hub import resolve_file
from .tokenizer import Tokenizer

TOKEN_DTYPE = np.uint16  # GPT-2's 50257 ids fit; half the disk and memory of int32


@dataclass(frozen=True)
class TokenData:
    """A tokenised corpus: the training and held-out ids (memory-mapped, [n]) and what they came from."""

    train: np.ndarray
    val: np.ndarray
    meta: dict


# ---- what is tokenised, and with what ----------------------------------------------------------


def tokenizer_fingerprint(source: str | os.PathLike) -> str:
    """SHA-256 of the tokenizer's vocab.json and merges.txt: ids from another vocabulary mean other words."""
    digest = hashlib.sha256()
    for name in ("vocab.json", "merges.txt"):
        digest.update(resolve_file(source, name).read_bytes())
    return digest.hexdigest()


def corpus_key(files: list[Path], tokenizer_id: str, val_fraction: float) -> str:
    """A name for the token files of these files: it changes when a file's name, size or mtime does, or
    the tokenizer, or the split."""
    stamps = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    text = json.dumps({"files": stamps, "tokenizer": tokenizer_id, "val_fraction": val_fraction})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- tokenising ----------------------------------------------------------------------------------


def tokenize_files(files: list[Path], tokenizer: Tokenizer, progress: bool = True) -> tuple[np.ndarray, list[Path]]:
    """(ids of every UTF-8 file, each followed by <|endoftext|> when the vocabulary has it; the files used)."""
    if tokenizer.n_vocab > np.iinfo(TOKEN_DTYPE).max + 1:
        raise InputError(f"a vocabulary of {tokenizer.n_vocab} ids does not fit the uint16 token files")
    separator = [tokenizer.special_tokens["<|endoftext|>"]] if "<|endoftext|>" in tokenizer.special_tokens else []
    parts, used = [], []
    for path in tqdm(files, desc="tokenising", unit="file", disable=not progress):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # a binary file in the folder: not text, not trained on
            continue
        except OSError as error:
            raise InputError(f"cannot read {path}: {error.strerror or error}") from None
        parts.append(np.array(tokenizer.encode_ordinary(text) + separator, dtype=TOKEN_DTYPE))
        used.append(path)
    if not used:
        raise InputError(f"none of the {len(files)} corpus files is UTF-8 text")
    return np.concatenate(parts), used


def write_tokens(path: Path, ids: np.ndarray) -> None:
    """Write ids as raw uint16, atomically."""
    atomic_write(path, lambda temporary: ids.astype(TOKEN_DTYPE).tofile(temporary))


def prepare(corpus: str | os.PathLike, tokenizer_source: str | os.PathLike, out: str | os.PathLike, *,
            val_fraction: float = 0.1, pattern: str = "*", progress: bool = True) -> TokenData:
    """Tokenise `corpus` into `out`/train.bin, val.bin and meta.json; the last `val_fraction` of ids is held out."""
    if not 0 < val_fraction < 1:
        raise InputError(f"the held-out fraction must be between 0 and 1, got {val_fraction}")
    files = corpus_files(corpus, pattern, option="--pattern")
    ids, used = tokenize_files(files, Tokenizer.from_pretrained(tokenizer_source), progress)
    split = len(ids) - max(1, round(len(ids) * val_fraction))
    if split < 1:
        raise InputError(f"the corpus {corpus} is only {len(ids)} tokens long: too short to split")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_tokens(out / "train.bin", ids[:split])
    write_tokens(out / "val.bin", ids[split:])
    meta = {
        "corpus": str(Path(corpus).resolve()),
        "files": [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in used],
        "tokenizer": tokenizer_fingerprint(tokenizer_source),
        "vocab_size": int(ids.max()) + 1,  # the largest id used + 1: a model needs at least this many
        "val_fraction": val_fraction,
        "train_tokens": split,
        "val_tokens": len(ids) - split,
    }
    write_text(out / "meta.json", json.dumps(meta, indent=1) + "\n")  # last: its presence means "complete"
    return load_tokens(out)


def load_tokens(folder: str | os.PathLike) -> TokenData:
    """The token files `prepare` wrote, memory-mapped (nothing is read until a window is asked for)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        train, val = (np.memmap(folder / name, dtype=TOKEN_DTYPE, mode="r") for name in ("train.bin", "val.bin"))
    except (OSError, ValueError) as error:
        raise InputError(f"{folder} holds no complete token files (run `minigpt-geom prepare`): {error}") from None
    return TokenData(train, val, meta)


def default_cache_dir() -> Path:
    """Where token files of a corpus are cached: $XDG_CACHE_HOME (or ~/.cache) /minigpt_geom/tokens."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "minigpt_geom" / "tokens"


def cache_folder(corpus: str | os.PathLike, tokenizer_source: str | os.PathLike, *, val_fraction: float = 0.1,
                 pattern: str = "*", cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the token files of `corpus`: the corpus itself if `prepare` made it, else the cache's."""
    if (Path(corpus) / "meta.json").is_file():
        return Path(corpus)
    key = corpus_key(corpus_files(corpus, pattern, option="--pattern"), tokenizer_fingerprint(tokenizer_source), val_fraction)
    return Path(cache_dir or default_cache_dir()) / key


# ---- windows -------------------------------------------------------------------------------------


def windows(ids: np.ndarray, starts: Tensor, context: int) -> tuple[Tensor, Tensor]:
    """Inputs x = ids[i : i+T] and targets y = ids[i+1 : i+T+1] for each start i: two int64 [B, T] tensors."""
    rows = np.stack([ids[i:i + context + 1] for i in starts.tolist()]).astype(np.int64)  # [B, T+1]
    rows = torch.from_numpy(rows)
    return rows[:, :-1], rows[:, 1:]
