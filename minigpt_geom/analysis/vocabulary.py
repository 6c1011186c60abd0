"""Which words a full-vocabulary ranking may name: those seen at least N times in a corpus.

A model trained on one corpus has rows of E for words it never saw (23k of GPT-2's 50k on 20 MB of English):
untrained, they keep their random initial values and crowd every ranking over the vocabulary (query-key
pairs, singular vectors read as words, probes, reach). `word_counts` counts the tokens of the files given to
`--vocab-from`; `allowed_words` turns the counts into a mask [V] that the rankings take as `allowed`:

    a prepared token folder (meta.json, train.bin, as `prepare` writes it)   its training ids, counted
    a .bin file of uint16 ids (the same format)                              its ids, counted
    a text file, or a folder of them (every UTF-8 file under it)             encoded with the model's tokenizer
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..io.files import open_regular
from ..text.corpus import corpus_files, encode_plain, text_chunks
from ..text.token_files import is_utf8

if TYPE_CHECKING:
    from ..text.tokenizer import Tokenizer

TOKEN_DTYPE = np.uint16  # the token files of data.py: raw uint16 ids
BLOCK_IDS = 1 << 18  # ids counted at a time: 512 KiB read, 2 MiB once widened


def token_file_counts(path: Path, n_vocab: int) -> np.ndarray:
    """Counts [n_vocab] of the ids in a raw uint16 token file, read a block of BLOCK_IDS at a time (bincount
    widens its input to int64: a whole 10 GB file would take 40 GB)."""
    counts = np.zeros(n_vocab, dtype=np.int64)
    try:
        with open_regular(path) as f:
            while block := f.read(BLOCK_IDS * np.dtype(TOKEN_DTYPE).itemsize):
                if len(block) % 2:
                    raise InputError(f"{path} is not a file of uint16 ids: it has an odd number of bytes")
                ids = np.frombuffer(block, dtype=TOKEN_DTYPE)
                if ids.size and int(ids.max()) >= n_vocab:
                    raise InputError(f"the token file {path} holds id {int(ids.max())}, outside this vocabulary "
                                     f"of {n_vocab}")
                counts += np.bincount(ids, minlength=n_vocab)
    except OSError as error:
        raise InputError(f"cannot read the token file {path}: {error.strerror or error}") from None
    return counts


def text_counts(files: Sequence[Path], tokenizer: Tokenizer, n_vocab: int) -> np.ndarray:
    """Counts [n_vocab] of the token ids of every UTF-8 text file (a file that is not text is skipped), read
    and counted a chunk at a time as a corpus is (corpus.py): memory stays bounded whatever the files' size."""
    counts = np.zeros(n_vocab, dtype=np.int64)
    for path in files:
        if not is_utf8(path):
            continue
        try:
            for text in text_chunks(path):
                ids = np.asarray(encode_plain(tokenizer, text), dtype=np.int64)
                counts += np.bincount(ids, minlength=n_vocab)[:n_vocab]
        except OSError as error:
            raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    return counts


def word_counts(sources: Sequence[str | os.PathLike], tokenizer: Tokenizer, n_vocab: int,
                pattern: str = "*") -> np.ndarray:
    """How often each of the n_vocab ids occurs in `sources` (see the module doc for what each may be): [n_vocab]."""
    counts = np.zeros(n_vocab, dtype=np.int64)
    for source in sources:
        path = Path(source)
        if (path / "meta.json").is_file() and (path / "train.bin").is_file():
            counts += token_file_counts(path / "train.bin", n_vocab)
        elif path.suffix == ".bin" and path.is_file():
            counts += token_file_counts(path, n_vocab)
        else:
            counts += text_counts(corpus_files(path, pattern), tokenizer, n_vocab)
    return counts


def allowed_words(counts: np.ndarray, min_count: int = 1, device: torch.device | str = "cpu") -> Tensor:
    """The mask [V] of words seen at least min_count times; InputError if it leaves no word."""
    allowed = torch.as_tensor(counts >= min_count, device=device)
    if not bool(allowed.any()):
        raise InputError(f"no word occurs {min_count} or more times in the --vocab-from files: lower --min-count")
    return allowed


def restrict(scores: Tensor, allowed: Tensor | None, dim: int = -1, largest: bool = True) -> Tensor:
    """scores with the words outside `allowed` (a mask along `dim`) set to ∓∞, so that topk never picks them."""
    if allowed is None:
        return scores
    shape = [1] * scores.dim()
    shape[dim] = -1
    fill = float("-inf") if largest else float("inf")
    return scores.masked_fill(~allowed.to(scores.device).view(shape), fill)
