"""A corpus as token ids on disk: tokenised once, as a stream, then read as random windows of a memory-mapped array.

    corpus     a text file, or a folder of them (every UTF-8 file under it, in sorted order; a command's own
               output folder left out)
    documents  each file, or each part of about DOCUMENT_CHARS characters of a longer one, cut where the
               pre-tokeniser cuts (corpus.py); tokenised by every core in turn, their ids kept in order
    ids        each file's ids followed by <|endoftext|>, all files concatenated
    train.bin  the training documents' ids, in corpus order      uint16, flat, read with np.memmap
    val.bin    the held-out documents' ids                       never trained on
    meta.json  what was tokenised: files (name, size, mtime), the pattern, the tokenizer's fingerprint (checked
               before training on the files), the split, counts; written last: the files are complete

The held-out split (`split`):
    "documents"  whole documents, drawn in an order shuffled with `split_seed`: each is held out if it keeps
                 the held-out ids within twice val_fraction of all ids, until they reach val_fraction. A corpus
                 of one document (a file shorter than DOCUMENT_CHARS) is split as "last".
    "last"       the last val_fraction of the ids (the corpus's alphabetically last files).

Memory stays bounded whatever the corpus's size: a few documents in flight per core, the ids streamed to a
temporary file, then copied into train.bin and val.bin. All of it is written aside and replaces the earlier
token files only once complete (prepare). Pieces longer than corpus.MAX_PIECE_CHARS characters
are encoded in parts, as `drift` does (corpus.py says where that can change the ids).

A window of T + 1 consecutive ids starting at i gives the input x = ids[i : i+T] and the targets
y = ids[i+1 : i+T+1]: position t learns to predict the id that follows it.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from .corpus import CHUNK_BYTES, corpus_bytes, corpus_files, text_chunks
from ..errors import CheckpointError, InputError, Note, OutputError
from .fast_tokenizer import choose_backend
from ..io.files import (atomic_write, folder_lock, move_together, open_regular, parse_json, read_bytes, read_text,
                        write_text)
from ..io.hub import resolve_file
from .parallel_tokenize import TOKEN_DTYPE, Document, encode_documents
from .tokenizer import ENDOFTEXT, TOKENIZER_FILE_BYTES, Tokenizer

SPLITS = ("documents", "last")
DOCUMENT_CHARS = 1 << 20  # a longer file is several documents: enough to hold out, small enough to share out
COPY_IDS = 1 << 20  # ids copied at a time from the temporary file into train.bin and val.bin
META_BYTES = 1 << 28  # a meta.json lists the corpus's files: far below this even for millions of them
META_KEYS = {"files": list, "tokenizer": str, "vocab_size": int, "train_tokens": int, "val_tokens": int}


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
        digest.update(read_bytes(resolve_file(source, name), TOKENIZER_FILE_BYTES, error=CheckpointError))
    return digest.hexdigest()


def check_tokenizer(data: TokenData, tokenizer_source: str | os.PathLike) -> None:
    """InputError when `data` was tokenised with another tokenizer than `tokenizer_source`'s: its ids would be
    read as other words."""
    made_with, given = data.meta["tokenizer"], tokenizer_fingerprint(tokenizer_source)
    if made_with != given:
        raise InputError(f"the token files of {data.meta.get('corpus', 'the corpus')} were made with another tokenizer "
                         f"(sha256 {made_with[:12]}…) than {tokenizer_source}'s ({given[:12]}…), so their ids would "
                         f"be read as other words: tokenise again with this tokenizer (prepare --tokenizer "
                         f"{tokenizer_source}) or give the one they were made with")


# What decides the data a run trains on, from meta.json: (what it is called, the setting that chooses it).
PROVENANCE = {"files": ("corpus files", "corpus"), "pattern": ("pattern", "pattern"),
              "tokenizer": ("tokenizer", "tokenizer"), "val_fraction": ("held-out fraction", "val_fraction"),
              "split": ("held-out split", "split"), "split_seed": ("split seed", "split_seed")}


def provenance(meta: dict) -> dict:
    """The corpus's files (names, sizes, times), the pattern, the tokenizer's fingerprint and the split of token
    files, from their meta.json: what a resumed run must train on again."""
    return {key: meta.get(key) for key in PROVENANCE}


def check_same_data(saved: dict, data: TokenData) -> None:
    """InputError naming the first way `data` differs from the data a saved run trained on (its provenance)."""
    now = provenance(data.meta)
    for key, (what, field) in PROVENANCE.items():
        if saved.get(key) != now[key]:
            if key == "files":
                before, after = ({Path(name).name for name, *_ in files or []} for files in (saved[key], now[key]))
                change = (f"{len(saved[key] or [])} files then, {len(now[key] or [])} now"
                          + (f" ({sorted(before ^ after)[0]} in one only)" if before ^ after else
                             ", of other sizes or times"))
            elif key == "tokenizer":
                change = f"sha256 {str(saved[key])[:12]}… then, {str(now[key])[:12]}… now"
            else:
                change = f"{saved.get(key)!r} then, {now[key]!r} now"
            raise InputError(f"the saved run trained on other data: its {what} differ{'' if key == 'files' else 's'} "
                             f"({change}); resume on the same corpus, tokenizer and split", field=field)


def corpus_key(files: list[Path], tokenizer_id: str, val_fraction: float, split: str = "documents",
               split_seed: int = 0) -> str:
    """A name for the token files of these files: it changes when a file's name, size or mtime does, or
    the tokenizer, or the split (the backend does not count: its ids are the reference's)."""
    stamps = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    text = json.dumps({"files": stamps, "tokenizer": tokenizer_id, "val_fraction": val_fraction,
                       "split": split, "split_seed": split_seed})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- documents -------------------------------------------------------------------------------------


def is_utf8(path: Path) -> bool:
    """Whether the whole file is UTF-8 text, read a block at a time (a binary file is left out of a corpus)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open_regular(path) as f:  # a file replaced by a FIFO since it was listed: refused, never waited on
            while block := f.read(CHUNK_BYTES):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    return True


def file_documents(path: Path, progress: tqdm | None = None) -> Iterator[Document]:
    """A file's documents: its text in parts of about DOCUMENT_CHARS characters, the last one marked."""
    texts, size = [], 0
    for text in text_chunks(path, progress=progress):
        texts.append(text)
        size += len(text)
        if size >= DOCUMENT_CHARS:
            yield texts, False
            texts, size = [], 0
    yield texts, True  # an empty file is one empty document: its <|endoftext|> alone


def held_out_documents(counts: np.ndarray, val_fraction: float, seed: int) -> np.ndarray | None:
    """Which documents [n] (bool) are held out under the "documents" rule (module doc); None if none can be."""
    target, total = val_fraction * counts.sum(), counts.sum()
    held = np.zeros(len(counts), dtype=bool)
    taken = 0
    for document in np.random.default_rng(seed).permutation(len(counts)):
        if taken >= target:
            break
        if taken + counts[document] <= 2 * target and held.sum() < len(counts) - 1 and counts[document] > 0:
            held[document] = True
            taken += counts[document]
    return held if held.any() and taken < total else None


def write_ranges(path: Path, ids_file: Path, ranges: Iterable[tuple[int, int]]) -> None:
    """Write ids[a:b] of the uint16 `ids_file` for each (a, b), one after another, atomically, COPY_IDS at a time
    (read, not mapped: a mapping's pages would count in the process's memory, growing with the corpus)."""
    itemsize = np.dtype(TOKEN_DTYPE).itemsize

    def write(temporary: Path) -> None:
        with ids_file.open("rb") as source, temporary.open("wb") as f:
            for start, stop in ranges:
                source.seek(start * itemsize)
                for block in range(start, stop, COPY_IDS):
                    f.write(source.read((min(block + COPY_IDS, stop) - block) * itemsize))
    atomic_write(path, write)


# ---- tokenising ----------------------------------------------------------------------------------


PREPARE_LOCK = ".prepare.lock"  # held while a prepare writes into the folder
STAGE = ".prepare.partial"  # the new token files, complete before they replace the earlier ones
TOKEN_FILES = ("train.bin", "val.bin", "meta.json")


def prepare(corpus: str | os.PathLike, tokenizer_source: str | os.PathLike, out: str | os.PathLike, *,
            val_fraction: float = 0.1, pattern: str = "*", split: str = "documents", split_seed: int = 0,
            backend: str = "auto", workers: int | None = None, exclude: Iterable[str | os.PathLike] = (),
            progress: bool = True) -> TokenData:
    """Tokenise `corpus` into `out`/train.bin, val.bin and meta.json, streaming, on `workers` processes
    (default: every core); `out` and the `exclude` folders are not read. The split is the module doc's.

    The new files are written aside (out/.prepare.partial) and replace the earlier ones only once complete,
    so a full disk or a kill leaves the earlier token files usable; one prepare at a time writes into `out`."""
    if not 0 < val_fraction < 1:
        raise InputError(f"the held-out fraction must be between 0 and 1, got {val_fraction}", field="val_fraction")
    if split not in SPLITS:
        raise InputError(f"unknown held-out split {split!r}: choose one of {', '.join(SPLITS)}", field="split")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or not 0 <= split_seed < 2**64:
        raise InputError(f"the split's seed must be a whole number in [0, 2^64), got {split_seed!r}",
                         field="split_seed")
    out = Path(out)
    files = corpus_files(corpus, pattern, exclude=[out, *exclude])
    vocab_json, merges_txt = resolve_file(tokenizer_source, "vocab.json"), resolve_file(tokenizer_source, "merges.txt")
    reference = Tokenizer.from_files(vocab_json, merges_txt)
    if reference.n_vocab > np.iinfo(TOKEN_DTYPE).max + 1:
        raise InputError(f"a vocabulary of {reference.n_vocab} ids does not fit the uint16 token files")
    used = [path for path in files if is_utf8(path)]  # a binary file in the folder: not text, not trained on
    if not used:
        raise InputError(f"none of the {len(files)} corpus files is UTF-8 text")
    if skipped := [path for path in files if path not in used]:
        warnings.warn(f"left out {len(skipped)} file(s) that are not UTF-8 text (an invalid byte): "
                      f"{', '.join(map(str, skipped[:3]))}{' …' if len(skipped) > 3 else ''}", Note)
    chosen = choose_backend(tokenizer_source, backend, used, reference)
    separator = [reference.special_tokens[ENDOFTEXT]] if ENDOFTEXT in reference.special_tokens else []

    with folder_lock(out, PREPARE_LOCK):
        stage = out / STAGE
        remove_leftovers(out)
        stage.mkdir()
        try:
            ids_file = stage / "ids"
            with ids_file.open("wb") as f, \
                    tqdm(total=corpus_bytes(used), desc="tokenising", unit="B", unit_scale=True,
                         disable=None if progress else True) as bar:  # None: a bar on a terminal only
                documents = (document for path in used for document in file_documents(path, bar))
                counts, largest = [], -1
                for ids in encode_documents(documents, chosen, vocab_json, merges_txt, separator, workers):
                    f.write(ids.tobytes())
                    counts.append(len(ids))
                    largest = max(largest, int(ids.max(initial=0)) if len(ids) else -1)
            meta = write_split(ids_file, stage, np.array(counts, dtype=np.int64), val_fraction, split, split_seed,
                               corpus)
            meta.update({
                "corpus": str(Path(corpus).resolve()),
                "pattern": pattern,
                "files": [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in used],
                "tokenizer": tokenizer_fingerprint(tokenizer_source),
                "tokenizer_backend": chosen,
                "vocab_size": largest + 1,  # the largest id used + 1: a model needs at least this many
                "val_fraction": val_fraction,
            })
            write_text(stage / "meta.json", json.dumps(meta, indent=1) + "\n")
            switch_token_files(stage, out)
        except OutputError:
            raise
        except OSError as error:  # a full disk while tokenising: the earlier token files stay
            raise OutputError(f"cannot write the token files into {out}: {error.strerror or error}") from None
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return load_tokens(out)


def remove_leftovers(out: Path) -> None:
    """Remove what a killed prepare left in `out` (its stage, or an older version's .ids.*.tmp and temporaries of
    the token files): only a prepare holding the folder's lock calls this, so none of it is in use."""
    shutil.rmtree(out / STAGE, ignore_errors=True)
    for leftover in (*out.glob(".ids.*.tmp"), *(p for name in TOKEN_FILES for p in out.glob(f".{name}.*.tmp*"))):
        leftover.unlink(missing_ok=True)


def switch_token_files(stage: Path, out: Path) -> None:
    """Move the complete train.bin, val.bin and meta.json from `stage` into `out`. meta.json, which says the
    files are complete, leaves first and arrives last: a kill in between leaves a folder refused as incomplete,
    never the earlier meta.json over the new ids; a failure puts the earlier files back."""
    meta, aside = out / "meta.json", stage / ".meta.json.previous"
    had_meta = meta.is_file()
    if had_meta:
        os.replace(meta, aside)
    try:
        move_together([(stage / name, out / name) for name in TOKEN_FILES], stage)
    except BaseException:
        if had_meta:
            os.replace(aside, meta)
        raise


def write_split(ids_file: Path, out: Path, counts: np.ndarray, val_fraction: float, split: str, split_seed: int,
                corpus: str | os.PathLike) -> dict:
    """Copy the ids of `ids_file` (documents of `counts` ids each) into train.bin and val.bin; the split's meta."""
    total = int(counts.sum())
    ends = np.cumsum(counts)
    held = held_out_documents(counts, val_fraction, split_seed) if split == "documents" else None
    if held is not None:
        spans = list(zip((ends - counts).tolist(), ends.tolist()))
        train = [span for span, out_of_training in zip(spans, held) if not out_of_training]
        val = [span for span, out_of_training in zip(spans, held) if out_of_training]
        meta = {"split": "documents", "split_seed": split_seed, "documents": len(counts),
                "val_documents": int(held.sum())}
    else:
        cut = total - max(1, round(total * val_fraction))
        if cut < 1:
            raise InputError(f"the corpus {corpus} is only {total} tokens long: too short to split")
        train, val = [(0, cut)], [(cut, total)]
        meta = {"split": "last", "documents": len(counts), "val_documents": 0}
    write_ranges(out / "train.bin", ids_file, train)
    write_ranges(out / "val.bin", ids_file, val)
    meta.update(train_tokens=sum(b - a for a, b in train), val_tokens=sum(b - a for a, b in val))
    return meta


# ---- reading, checked once ------------------------------------------------------------------------


def largest_id(path: Path) -> int:
    """The largest uint16 id in a token file, read a block at a time (bounded memory), -1 if it is empty."""
    largest = -1
    with open_regular(path) as f:
        while block := f.read(2 * COPY_IDS):
            largest = max(largest, int(np.frombuffer(block, dtype=TOKEN_DTYPE).max()))
    return largest


def token_files_problem(folder: Path, meta: object) -> str | None:
    """What is wrong with the token files in `folder` given their meta.json, or None if they match it."""
    if not isinstance(meta, dict):
        return "meta.json is not a JSON object"
    for key, kind in META_KEYS.items():
        if type(meta.get(key)) is not kind or (kind is int and meta[key] < 0):
            return f"meta.json's {key!r} is missing or not a {'whole number >= 0' if kind is int else kind.__name__}"
    for name, key in (("train.bin", "train_tokens"), ("val.bin", "val_tokens")):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing or not a regular file"
        size = path.stat().st_size
        if size != meta[key] * np.dtype(TOKEN_DTYPE).itemsize:
            return f"{name} holds {size} bytes, meta.json says {meta[key]} ids of 2 bytes"
        largest = largest_id(path)
        if largest >= meta["vocab_size"]:
            return f"{name} holds the id {largest}, not below meta.json's vocab_size {meta['vocab_size']}"
    return None


def load_tokens(folder: str | os.PathLike) -> TokenData:
    """The token files `prepare` wrote, checked against their meta.json once, then memory-mapped."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise InputError(f"{folder} holds no complete token files (run `minigpt-geom prepare`)")
    try:
        meta = parse_json(read_text(meta_path, META_BYTES))
    except (OSError, ValueError) as error:  # not a regular file, too large, not UTF-8, not JSON
        meta = f"meta.json cannot be read ({error})"
    problem = meta if isinstance(meta, str) else token_files_problem(folder, meta)
    if problem:
        raise InputError(f"the token files in {folder} are damaged ({problem}): delete {folder} and tokenise again")
    train, val = (np.memmap(folder / name, dtype=TOKEN_DTYPE, mode="r") if meta[key] else np.zeros(0, TOKEN_DTYPE)
                  for name, key in (("train.bin", "train_tokens"), ("val.bin", "val_tokens")))
    return TokenData(train, val, meta)


def default_cache_dir() -> Path:
    """Where token files of a corpus are cached: $XDG_CACHE_HOME (or ~/.cache) /minigpt_geom/tokens."""
    root = os.environ.get("XDG_CACHE_HOME")
    if not root:
        try:
            root = Path.home() / ".cache"
        except (RuntimeError, KeyError):  # no $HOME, and a uid without a passwd entry (a container's)
            raise InputError("no folder to cache the corpus's token files in: $HOME is not set and this user has "
                             "no home; set XDG_CACHE_HOME, or tokenise the corpus first (`minigpt-geom prepare CORPUS "
                             "-o DIR`) and give DIR as the corpus") from None
    return Path(root) / "minigpt_geom" / "tokens"


def cache_folder(corpus: str | os.PathLike, tokenizer_source: str | os.PathLike, *, val_fraction: float = 0.1,
                 pattern: str = "*", split: str = "documents", split_seed: int = 0,
                 exclude: Iterable[str | os.PathLike] = (), cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the token files of `corpus`: the corpus itself if `prepare` made it, else the cache's."""
    if (Path(corpus) / "meta.json").is_file():
        return Path(corpus)
    files = corpus_files(corpus, pattern, exclude=exclude)
    key = corpus_key(files, tokenizer_fingerprint(tokenizer_source), val_fraction, split, split_seed)
    return Path(cache_dir or default_cache_dir()) / key


# ---- windows -------------------------------------------------------------------------------------


def windows(ids: np.ndarray, starts: Tensor, context: int) -> tuple[Tensor, Tensor]:
    """Inputs x = ids[i : i+T] and targets y = ids[i+1 : i+T+1] for each start i: two int64 [B, T] tensors."""
    rows = np.stack([ids[i:i + context + 1] for i in starts.tolist()]).astype(np.int64)  # [B, T+1]
    rows = torch.from_numpy(rows)
    return rows[:, :-1], rows[:, 1:]
