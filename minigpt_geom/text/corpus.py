"""Reading a corpus as a stream: files -> text chunks -> token ids -> windows of the model's context.

A corpus is a text file or a folder of them (files matching a pattern, `*.txt` by default). Each file is read
CHUNK_BYTES at a time, decoded incrementally (invalid UTF-8 -> U+FFFD), and each chunk is cut at its last
whitespace character that precedes a non-space: GPT-2's pre-tokeniser always starts a piece there, so
encoding chunk by chunk gives exactly the ids of encoding the whole file. Memory stays bounded whatever
the file holds, at the price of two cuts that can change the tokens right where they fall:
  - a stretch of more than MAX_CARRY_CHARS characters with no such place (no whitespace before a word) is
    cut where it reaches that length;
  - a pre-tokeniser piece (a word, a number, a run of symbols or of spaces) longer than MAX_PIECE_CHARS
    characters is cut every MAX_PIECE_CHARS characters, each part encoded on its own.
Tokens are grouped into windows of `size` (the last, shorter one kept) that never cross a file.

This is core: drift streams windows from it, `data.py` (prepare, train) streams documents to token files.
"""

from __future__ import annotations

import codecs
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Protocol, Sequence

import regex

from ..errors import InputError, Note
from ..io.files import not_regular, open_regular
from .tokenizer import GPT2_PATTERN

if TYPE_CHECKING:
    from tqdm import tqdm


class PlainEncoder(Protocol):
    """What reads a corpus: the reference Tokenizer, or a faster backend that gives the same ids."""

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of `text`, special-token text taken as plain text."""

DEFAULT_PATTERN = "*.txt"
CHUNK_BYTES = 1 << 16  # read 64 KiB at a time: a few batches of windows, so progress moves in small steps
MAX_CARRY_CHARS = 1 << 20  # longest stretch kept waiting for a safe cut
MAX_PIECE_CHARS = 256  # longest piece encoded whole (GPT-2's longest token is far shorter)
MAX_RUN_CHARS = 1 << 16  # longest run of pieces given to the tokenizer at once (its memory grows with the text)
SAFE_CUT = regex.compile(r"(?r)\s(?=\S)")  # searched from the end: the last place a new piece starts
PIECE = regex.compile(GPT2_PATTERN)
LONG_RUN = regex.compile(rf"\S{{{MAX_PIECE_CHARS}}}|\s{{{MAX_PIECE_CHARS}}}")  # every longer piece holds one
# LONG_RUN costs as much as the BPE itself (bench/NOTES.md), so a text is first tested on its UTF-8 bytes, where
# a run of MAX_PIECE_CHARS characters is a run of at least as many bytes. Each table maps a byte to 1 where it
# may belong to such a run: an ASCII byte by the pre-tokeniser's own \s, any byte >= 0x80 (part of a non-ASCII
# character, which may be either) in both. No run of 1s that long: no long piece (str.translate and `in` run in C).
_ASCII_SPACE = [byte for byte in range(128) if regex.match(r"\s", chr(byte))]
_MAY_BE_TEXT = bytes(0 if byte in _ASCII_SPACE else 1 for byte in range(256))
_MAY_BE_SPACE = bytes(1 if byte in _ASCII_SPACE or byte >= 0x80 else 0 for byte in range(256))
_LONG_BYTES = b"\x01" * MAX_PIECE_CHARS


def corpus_files(path: str | Path, pattern: str = DEFAULT_PATTERN,
                 exclude: Iterable[str | Path] = ()) -> list[Path]:
    """The file itself, or every file under a folder matching `pattern` (recursive, sorted), hidden files and
    folders (`.git`), `__pycache__` and the folders in `exclude` (a command's own output) left out."""
    if not os.fspath(path):
        raise InputError("the corpus path is empty: give a text file or a folder of text files", field="corpus")
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        what = not_regular(path.stat().st_mode) if path.exists() else None  # a FIFO, a device: not "missing"
        problem = f"is {what}, not" if what else "does not exist:"
        raise InputError(f"corpus {path} {problem} a text file or a folder of text files", field="corpus")
    if not pattern or Path(pattern).is_absolute() or ".." in Path(pattern).parts:  # rglob would leave the folder
        raise InputError(f"the pattern {pattern!r} must name files inside the corpus folder (relative, without "
                         f"'..')", field="pattern")
    # realpath, not resolve: an excluded -o that is a loop of links is refused later, in one line, not here
    excluded = [Path(os.path.realpath(folder)) for folder in [*exclude, *token_folders(path)]]
    files = sorted(
        p for p in path.rglob(pattern)
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(path).parts)
        and not any(Path(os.path.realpath(p)).is_relative_to(folder) for folder in excluded)
    )
    if not files:
        raise InputError(f"no files matching the pattern {pattern!r} under {path}", field="pattern")
    return files


def token_folders(root: Path) -> list[Path]:
    """The folders under `root` that `prepare` wrote (meta.json beside train.bin): token files, not text, left
    out of a corpus whatever --pattern says (each named in a note)."""
    found = [meta.parent for meta in root.rglob("meta.json") if (meta.parent / "train.bin").is_file()]
    for folder in found:
        warnings.warn(f"{folder} holds token files of an earlier `prepare`: left out of the corpus", Note)
    return found


def text_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES, progress: tqdm | None = None) -> Iterator[str]:
    """The text of a UTF-8 file in pieces that the pre-tokeniser cuts between too (see the module doc).

    `progress` advances by a block's bytes once the reader asks for the text after it, so it counts text
    that has been used, not merely read."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    carry = ""
    with open_regular(path) as f:  # never waits on a FIFO, even one that replaced a listed file since
        while block := f.read(chunk_bytes):
            text = carry + decoder.decode(block)
            # The last "whitespace, then non-space": none lies after the carry's first character, which is one
            # (or the carry was cut without one), so only its last character and the new text are searched.
            last = SAFE_CUT.search(text, max(len(carry) - 1, 0))
            cut = last.start() if last else 0
            if len(text) - cut > MAX_CARRY_CHARS:
                cut = len(text)  # no safe place in a long stretch: cut it anyway
            carry = text[cut:]
            if cut > 0:
                yield text[:cut]
            if progress is not None:
                progress.update(len(block))
    carry += decoder.decode(b"", final=True)
    if carry:
        yield carry


def may_hold_long_piece(text: str) -> bool:
    """False when no pre-tokeniser piece of `text` can be longer than MAX_PIECE_CHARS; True is only a maybe."""
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate: three bytes >= 0x80, counted as either
    return _LONG_BYTES in data.translate(_MAY_BE_TEXT) or _LONG_BYTES in data.translate(_MAY_BE_SPACE)


def encode_plain(tokenizer: PlainEncoder, text: str) -> list[int]:
    """Token ids of corpus text, special-token text such as <|endoftext|> as plain text; long pieces cut."""
    if not may_hold_long_piece(text) or not LONG_RUN.search(text):  # usual: no piece longer than MAX_PIECE_CHARS
        return tokenizer.encode_ordinary(text)
    # A run of whole pieces encodes to the same ids alone as within its text: encode each run of short pieces
    # in one call, and each long piece in parts of MAX_PIECE_CHARS characters.
    ids: list[int] = []
    start = 0  # where the current run of short pieces begins
    for piece in PIECE.finditer(text):
        if piece.start() - start >= MAX_RUN_CHARS:  # a text without whitespace: encode it in runs of bounded length
            ids.extend(tokenizer.encode_ordinary(text[start:piece.start()]))
            start = piece.start()
        if piece.end() - piece.start() > MAX_PIECE_CHARS:
            if start < piece.start():
                ids.extend(tokenizer.encode_ordinary(text[start:piece.start()]))
            for cut in range(piece.start(), piece.end(), MAX_PIECE_CHARS):
                ids.extend(tokenizer.encode_ordinary(text[cut:min(cut + MAX_PIECE_CHARS, piece.end())]))
            start = piece.end()
    if start < len(text):
        ids.extend(tokenizer.encode_ordinary(text[start:]))
    return ids


def token_windows(token_chunks: Iterable[Sequence[int]], size: int) -> Iterator[list[int]]:
    """Group a stream of id chunks into consecutive windows of `size` ids; the last one is kept if ≥ 2 ids."""
    window: list[int] = []
    for chunk in token_chunks:
        window.extend(chunk)
        start = 0
        while len(window) - start >= size:
            yield window[start:start + size]
            start += size
        del window[:start]  # once per chunk: dropping each window as it goes would copy the rest every time
    if len(window) >= 2:
        yield window


def corpus_windows(files: Sequence[Path], tokenizer: PlainEncoder, size: int, chunk_bytes: int = CHUNK_BYTES,
                   progress: tqdm | None = None) -> Iterator[list[int]]:
    """Windows of every file in turn, read and tokenised incrementally (windows never cross files)."""
    for path in files:
        chunks = (encode_plain(tokenizer, text) for text in text_chunks(path, chunk_bytes, progress))
        yield from token_windows(chunks, size)


def text_windows(texts: Iterable[str], tokenizer: PlainEncoder, size: int) -> Iterator[list[int]]:
    """The same windows as corpus_windows, from texts held in memory (each encoded whole)."""
    for text in texts:
        yield from token_windows([encode_plain(tokenizer, text)], size)


def corpus_bytes(files: Sequence[Path]) -> int:
    """The corpus's size in bytes: the total of the drift command's progress bar."""
    return sum(path.stat().st_size for path in files)
