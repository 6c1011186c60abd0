"""A compiled tokenizer for bulk work, beside the first-principles one: the same ids, checked, not assumed.

`tokenizer.py` is the reference and the teaching code. For a corpus, a compiled library reads the same
vocab.json and merges.txt and runs the same byte-level BPE with the same pre-tokenising regex: tiktoken where it
is installed, else Hugging Face `tokenizers`; both are the optional extra `pip install "minigpt-geom[fast]"`.
Which one reads a corpus is the backend:

    reference   minigpt_geom.text.tokenizer.Tokenizer
    fast        FastTokenizer (tiktoken, else Hugging Face `tokenizers`)
    auto        fast when one of the two is installed, agrees with the reference on a sample, and encoded
                that sample faster; else reference

A fast backend is always compared with the reference on a sample of the corpus first (`choose_backend`).
"Fast" is the hope, not a promise: the reference caches the pieces it has merged and can keep pace on a corpus
of few distinct words, hence auto's timing of both on the sample. Why tiktoken comes first: bench/NOTES.md.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import random
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

from .corpus import PlainEncoder, encode_plain
from ..errors import InputError, Note
from ..io.files import open_regular
from ..io.hub import resolve_file
from .tokenizer import ENDOFTEXT, GPT2_PATTERN, Tokenizer, replace_lone_surrogates

BACKENDS = ("auto", "reference", "fast")
SAMPLE_DOCUMENTS = 4  # documents drawn for the check at start
SAMPLE_BYTES = 1 << 14  # bytes read from each: enough for thousands of pieces, a fraction of a second to encode
# Text that exercises every branch of the pre-tokeniser and the byte table, checked besides the corpus sample.
PROBE = ("Don't stop: it's 1,234.5 km/h!  Two  spaces,\ttabs\r\nand\n\nnewlines. café naïve Ελλάδα 日本語 😀👩‍💻 "
         "x'll 've 're <|endoftext|> ==== ---- ____ \u00a0\u3000 trailing   ")


class BackendWarning(Note):
    """The fast backend was not used because it gave other ids than the reference, or a library of it was
    passed over because it does not import."""


LIBRARIES = ("tiktoken", "tokenizers")  # in order of preference (bench/NOTES.md)


@functools.cache  # once per process: the note is shown once, and worker processes inherit the answer
def installed_library() -> str | None:
    """The first of LIBRARIES that is installed and imports, or None. One that is installed but fails to import
    (a broken install, a missing shared library) is passed over with a note naming why."""
    for name in LIBRARIES:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            importlib.import_module(name)
        except Exception as error:  # a broken install fails in any way: ImportError, OSError of a .so, AttributeError
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:160]
            warnings.warn(f"{name} is installed but does not import ({reason}): passed over", BackendWarning,
                          stacklevel=2)
            continue
        return name
    return None


def tiktoken_encoder(reference: Tokenizer) -> Callable[[str], list[int]]:
    """tiktoken's BPE over the reference's vocabulary (token bytes -> id, as Tokenizer.from_files read it).

    tiktoken merges first the adjacent pair whose merged token has the lowest rank; with rank = id that is the
    order of merges.txt whenever ids follow it, as GPT-2's do (256 bytes, then one id per merge). A vocabulary
    that does not is caught by the check at start (choose_backend), which compares the ids with the reference's.
    tiktoken replaces a lone surrogate by U+FFFD itself, as the reference does."""
    import tiktoken

    return tiktoken.Encoding("minigpt_geom", pat_str=GPT2_PATTERN, mergeable_ranks=reference.encoder,
                             special_tokens={}).encode_ordinary


def tokenizers_encoder(vocab_json: str | os.PathLike, merges_txt: str | os.PathLike) -> Callable[[str], list[int]]:
    """Hugging Face `tokenizers`' BPE over vocab.json and merges.txt, read as they are."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    vocab, merges = models.BPE.read_file(str(vocab_json), str(merges_txt))
    # No special tokens are registered: <|endoftext|> in a text is plain text, as in encode_ordinary.
    # A large cache: a corpus repeats its words, and each cached piece skips its merges.
    tokenizer = HFTokenizer(models.BPE(vocab, merges, cache_capacity=1 << 18))
    # The ByteLevel regex is GPT-2's (use_regex), and no space is added in front of a text.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)

    def encode(text: str) -> list[int]:
        try:
            return tokenizer.encode(text, add_special_tokens=False).ids
        except TypeError:  # "must be str": a lone surrogate has no UTF-8 form; U+FFFD instead, as the reference does
            return tokenizer.encode(replace_lone_surrogates(text), add_special_tokens=False).ids
    return encode


class FastTokenizer:
    """GPT-2's byte-level BPE run by a compiled library: Tokenizer.encode_ordinary's ids, tiktoken or `tokenizers`."""

    def __init__(self, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike,
                 library: str | None = None) -> None:
        """Build from the same vocab.json and merges.txt the reference reads, with `library` (one of LIBRARIES;
        by default the first installed)."""
        self.library = library or installed_library()
        if self.library is None:
            raise InputError('the fast tokenizer backend needs tiktoken or Hugging Face `tokenizers`: '
                             'pip install "minigpt-geom[fast]"', field="tokenizer_backend")
        if self.library not in LIBRARIES:
            raise ValueError(f"unknown library {library!r}: one of {', '.join(LIBRARIES)}")
        reference = Tokenizer.from_files(vocab_json, merges_txt)  # the files read and checked once, by the reference
        self.eot_token = reference.special_tokens.get(ENDOFTEXT)
        self._encode = (tiktoken_encoder(reference) if self.library == "tiktoken"
                        else tokenizers_encoder(vocab_json, merges_txt))

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike) -> FastTokenizer:
        """Load vocab.json and merges.txt from the places Tokenizer.from_pretrained looks."""
        return cls(resolve_file(source, "vocab.json"), resolve_file(source, "merges.txt"))

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode `text`, special-token text as plain text: the ids of Tokenizer.encode_ordinary."""
        return self._encode(text)


def sample_texts(files: Sequence[Path], seed: int = 0) -> list[str]:
    """A few stretches of the corpus to check a backend on: SAMPLE_BYTES from each of a few random files."""
    rng = random.Random(seed)
    texts = [PROBE]
    for path in rng.sample(list(files), min(SAMPLE_DOCUMENTS, len(files))):
        try:
            size = path.stat().st_size
            with open_regular(path) as f:
                f.seek(rng.randrange(max(1, size - SAMPLE_BYTES)))
                texts.append(f.read(SAMPLE_BYTES).decode("utf-8", errors="replace"))
        except (OSError, InputError):  # gone, or no longer a regular file
            continue  # the corpus reader names the file that cannot be read
    return texts


def timed_ids(tokenizer: PlainEncoder, texts: Sequence[str]) -> tuple[list[list[int]], float]:
    """The ids of each text as the corpus reader encodes them, and the seconds that took."""
    start = time.perf_counter()
    ids = [encode_plain(tokenizer, text) for text in texts]
    return ids, time.perf_counter() - start


def first_difference(texts: Sequence[str], expected: list[list[int]], got: list[list[int]]) -> str | None:
    """None if the two encodings of `texts` agree, else a description of the first difference."""
    for text, a, b in zip(texts, expected, got):
        if a != b:
            at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            return f"token {at} of {text[:40]!r}… differs ({b[at:at + 3]} instead of {a[at:at + 3]})"
    return None


def choose_backend(source: str | os.PathLike, backend: str = "auto", files: Sequence[Path] = (),
                   reference: Tokenizer | None = None) -> str:
    """"reference" or "fast": the backend that reads this corpus. The fast one only once it gives the reference's
    ids on a sample of it; under "auto", also only if it encoded the sample faster (it may not: module doc)."""
    if backend not in BACKENDS:
        raise InputError(f"unknown tokenizer backend {backend!r}: choose one of {', '.join(BACKENDS)}",
                         field="tokenizer_backend")
    if backend == "reference" or (backend == "auto" and installed_library() is None):
        return "reference"
    sample = sample_texts(files)
    expected, reference_seconds = timed_ids(reference or Tokenizer.from_pretrained(source), sample)
    got, fast_seconds = timed_ids(FastTokenizer.from_pretrained(source), sample)
    difference = first_difference(sample, expected, got)
    if difference is None:
        return "fast" if backend == "fast" or fast_seconds < reference_seconds else "reference"
    if backend == "fast":
        raise InputError(f"the fast tokenizer disagrees with the reference on this corpus: {difference}",
                         field="tokenizer_backend")
    warnings.warn(f"the fast tokenizer disagrees with the reference ({difference}): using the reference",
                  BackendWarning, stacklevel=2)
    return "reference"


def load_backend(backend: str, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike) -> PlainEncoder:
    """The tokenizer of a backend that choose_backend chose ("reference" or "fast"), from its two files."""
    return FastTokenizer(vocab_json, merges_txt) if backend == "fast" else Tokenizer.from_files(vocab_json, merges_txt)


def corpus_tokenizer(source: str | os.PathLike, backend: str, files: Sequence[Path],
                     reference: Tokenizer | None = None) -> PlainEncoder:
    """The tokenizer that reads `files`: choose_backend's choice, loaded."""
    chosen = choose_backend(source, backend, files, reference)
    if chosen == "reference" and reference is not None:
        return reference
    return load_backend(chosen, resolve_file(source, "vocab.json"), resolve_file(source, "merges.txt"))
