"""Tokenising a corpus on every core: worker processes take documents in turn, their ids come back in order.

A document is a list of texts (a file, or a part of one, cut where the pre-tokeniser cuts: see corpus.py),
so the ids do not depend on how many processes there are. At most IN_FLIGHT documents per process are read
ahead of the one being written, which bounds memory whatever the corpus's size.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .corpus import PlainEncoder, encode_plain
from .fast_tokenizer import load_backend

TOKEN_DTYPE = np.uint16  # GPT-2's 50257 ids fit; half the disk and memory of int32
IN_FLIGHT = 2  # documents queued per worker: one being encoded, one waiting, so no worker idles

Document = tuple[Sequence[str], bool]  # its texts, and whether <|endoftext|> follows (the file's last part)

_tokenizer: PlainEncoder | None = None  # each worker process's own tokenizer
_separator: list[int] = []


def available_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def start_worker(backend: str, vocab_json: Path, merges_txt: Path, separator: list[int]) -> None:
    """Build this process's tokenizer (in each worker once, at its start)."""
    global _tokenizer, _separator
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread a process: the processes are the parallelism
    _tokenizer, _separator = load_backend(backend, vocab_json, merges_txt), separator


def encode_document(document: Document) -> np.ndarray:
    """The ids of one document's texts, then the separator if the file ends with it: uint16 [n]."""
    texts, end_of_file = document
    parts = [encode_plain(_tokenizer, text) for text in texts] + ([_separator] if end_of_file else [])
    return np.concatenate([np.array(ids, dtype=TOKEN_DTYPE) for ids in parts] or [np.zeros(0, TOKEN_DTYPE)])


def encode_documents(documents: Iterable[Document], backend: str, vocab_json: Path, merges_txt: Path,
                     separator: list[int], workers: int | None = None) -> Iterator[np.ndarray]:
    """The ids of each document, in the documents' order, encoded by `workers` processes (default: every core)."""
    workers = workers or available_cores()
    setup = (backend, vocab_json, merges_txt, separator)
    if workers == 1:
        start_worker(*setup)
        yield from map(encode_document, documents)
        return
    # fork starts a worker without re-importing the package (seconds with torch); spawn where there is no fork
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with context.Pool(workers, initializer=start_worker, initargs=setup) as pool:
        pending: deque = deque()  # AsyncResults in document order; Pool.imap would read the whole corpus ahead
        for document in documents:
            pending.append(pool.apply_async(encode_document, (document,)))
            if len(pending) >= IN_FLIGHT * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
