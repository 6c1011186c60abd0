"""GPT-2's byte-level BPE tokenizer, from first principles.

Text becomes token ids in three steps:

1. Pre-tokenise: a regex cuts the text into word-like pieces (" hello", "'s", "42", "  ").
   Merges never cross a piece boundary, so a piece can be encoded on its own (and cached).
2. Bytes: each piece becomes its UTF-8 bytes. Every string is a byte string, so 256 base
   tokens cover any text and there is no "unknown" token.
3. Byte-pair merges: merges.txt lists pairs of adjacent tokens in the order they were learned.
   Repeatedly merge the pair that was learned earliest (its "rank") wherever it occurs,
   until no learned pair is left; each remaining chunk of bytes is one vocabulary entry.
   A priority queue of the adjacent pairs finds that pair in O(log n), so a piece of n bytes
   costs O(n log n) rather than a scan of the whole piece for every merge.

Decoding is the inverse and needs no merges: concatenate each id's bytes, decode UTF-8.
"""

from __future__ import annotations

import functools
import heapq
import math
import os
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Literal

import regex

from ..errors import CheckpointError, InputError, WeightsNotFoundError
from ..config import LIMITS
from ..io.files import parse_json, read_text
from ..io.hub import resolve_file

# GPT-2's pre-tokenisation: contractions, optional space + letters, optional space + digits,
# optional space + other symbols, then whitespace (a run of spaces gives its last space to the next word).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"
# Pieces up to this many characters are cached: real text repeats short words, and the bound keeps the cache
# small (at most cache_size pieces) whatever the text; a long piece is rarely seen twice.
CACHED_PIECE_CHARS = 64
TOKENIZER_FILE_BYTES = 2**28  # the most read of vocab.json or merges.txt: GPT-2's vocab.json is 1 MB
LONE_SURROGATE = regex.compile("[\ud800-\udfff]")  # in a str, only an unpaired surrogate matches


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte value to the printable character that stands for it in the files."""
    # vocab.json and merges.txt are text: a token with a raw space, newline or control byte would be
    # unreadable (merges.txt even separates a pair with a space). So printable Latin-1 bytes stand for
    # themselves and the other 68 bytes are shifted to chr(256), chr(257), ...: " hi" is stored as "Ġhi".
    # The table only concerns the files; inside this module tokens are plain `bytes`.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in table)
    table.update({b: chr(256 + n) for n, b in enumerate(shifted)})
    return table  # in GPT-2's order of the 256 base ids: printable bytes first, then the shifted ones


class Tokenizer:
    """Byte-level BPE: `encode` text to ids and `decode` ids back to text, exactly like GPT-2."""

    def __init__(self, vocab: dict[bytes, int], merges: list[tuple[bytes, bytes]],
                 special_tokens: dict[str, int], *, cache_size: int = 1 << 16) -> None:
        """Build from token bytes -> id, the merges in learned order and special token -> id."""
        self.encoder = vocab
        self.special_tokens = special_tokens
        self.decoder = {i: token for token, i in vocab.items()}
        self.decoder.update({i: name.encode("utf-8") for name, i in special_tokens.items()})
        self._n_vocab = max(self.decoder) + 1
        self._byte_ids = [vocab[bytes([b])] for b in range(256)]
        # (left id, right id) -> (rank, id of the merged token); earlier learned = lower rank = merged first.
        # The pair is keyed by one int, left * n_vocab + right, which hashes faster than a tuple.
        self._merge_of = {vocab[a] * self._n_vocab + vocab[b]: (rank, vocab[a + b])
                          for rank, (a, b) in enumerate(merges)}
        self._longest_token = max(map(len, vocab))
        self.pattern = regex.compile(GPT2_PATTERN)
        self._cached_bpe = functools.lru_cache(maxsize=cache_size)(self._bpe)  # for pieces <= CACHED_PIECE_CHARS

    # ---- constructors -------------------------------------------------------------------------

    @classmethod
    def from_files(cls, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike) -> Tokenizer:
        """Load `vocab.json` (token -> id) and `merges.txt` (one pair a line), alias encoder.json and vocab.bpe."""
        # OpenAI's original encoder.json and vocab.bpe are these two files under other names (HF copied them).
        char_to_byte = {c: b for b, c in bytes_to_unicode().items()}

        def to_bytes(token: str, where: Path) -> bytes:
            try:
                return bytes(char_to_byte[c] for c in token)
            except KeyError:
                raise CheckpointError(f"{where}: token {token!r} is not written in GPT-2's byte alphabet") from None

        vocab_path, merges_path = Path(vocab_json), Path(merges_txt)
        try:
            raw = parse_json(_read(vocab_path))
        except ValueError as error:  # malformed, nested too deeply, a number of thousands of digits
            raise CheckpointError(f"{vocab_path} is not valid JSON: {error}") from None
        most = LIMITS["vocab_size"]  # a GPT-2's largest vocabulary: an id beyond it has no embedding row
        if not isinstance(raw, dict) or not all(isinstance(t, str) and type(i) is int and 0 <= i < most
                                                for t, i in raw.items()):
            raise CheckpointError(f"{vocab_path}: expected a JSON object mapping token strings to ids from 0 to "
                                  f"{most - 1}")
        if len(set(raw.values())) != len(raw):
            raise CheckpointError(f"{vocab_path}: two tokens share an id")
        specials = {t: i for t, i in raw.items() if t == ENDOFTEXT}
        vocab = {to_bytes(t, vocab_path): i for t, i in raw.items() if t not in specials}
        missing = [b for b in range(256) if bytes([b]) not in vocab]
        if missing:
            raise CheckpointError(f"{vocab_path}: no token for byte {missing[0]:#04x} ({len(missing)} bytes missing)")

        merges = []
        for number, line in enumerate(_read(merges_path).split("\n"), start=1):
            if not line.strip() or (number == 1 and line.startswith("#version")):
                continue
            pair = line.split()  # the byte alphabet has no whitespace, so a space only separates the pair
            if len(pair) != 2:
                raise CheckpointError(f"{merges_path}, line {number}: expected two tokens, got {line!r}")
            first, second = (to_bytes(t, merges_path) for t in pair)
            for token in (first, second, first + second):
                if token not in vocab:
                    raise CheckpointError(f"{merges_path}, line {number}: {line!r} uses a token not in {vocab_path.name}")
            merges.append((first, second))
        return cls(vocab, merges, specials)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike = "gpt2") -> Tokenizer:
        """Load from a preset ("gpt2", ...), the offline weights/ drop-in, a hub id or a local directory."""
        return cls.from_files(resolve_file(source, "vocab.json"), resolve_file(source, "merges.txt"))

    # ---- properties ---------------------------------------------------------------------------

    @property
    def eot_token(self) -> int:
        """Id of `<|endoftext|>`, the token GPT-2 puts between documents."""
        if ENDOFTEXT not in self.special_tokens:
            raise CheckpointError(f"this vocabulary has no {ENDOFTEXT} token")
        return self.special_tokens[ENDOFTEXT]

    @property
    def n_vocab(self) -> int:
        """Number of ids: one more than the largest id."""
        return self._n_vocab

    def check_fits(self, vocab_size: int) -> None:
        """Refuse a model whose vocabulary (embedding rows) has no room for some of this tokenizer's ids."""
        if self.n_vocab > vocab_size:
            raise InputError(f"the tokenizer has {self.n_vocab} ids but the model's vocabulary holds {vocab_size}: "
                             f"use the tokenizer the model was trained with")

    # ---- encoding -----------------------------------------------------------------------------

    def _bpe(self, piece: str) -> tuple[int, ...]:
        """Ids of one pre-tokenised piece: merge its bytes pair by pair, lowest rank first, in O(n log n)."""
        ids = [self._byte_ids[b] for b in piece.encode("utf-8")]
        n, stride, merge_of = len(ids), self._n_vocab, self._merge_of.get
        # The piece is a row of symbols, each a span of its bytes. The symbol starting at byte `first` has
        # token ids[first] and ends where the next one starts, end[first]: a linked list forward for free;
        # prev[] links it backward. A symbol merged into its left neighbour is marked dead with end = 0.
        end, prev = list(range(1, n + 1)), list(range(-1, n - 1))

        # The queue holds the learned adjacent pairs as rank * n + position: smallest first is lowest rank first,
        # leftmost among equal ranks (and one int compares faster than a (rank, position) tuple).
        queue = []
        for first in range(n - 1):
            found = merge_of(ids[first] * stride + ids[first + 1])  # (rank, merged id) or None
            if found:
                queue.append(found[0] * n + first)
        heapq.heapify(queue)
        while queue:
            # A round merges every occurrence of the lowest-ranked pair, left to right, as the textbook loop
            # does ("a a a" -> "aa a"). The pairs it creates join the queue when it ends, so that none of them
            # (even one that merges.txt ranks lower) cuts in before the round's remaining occurrences.
            rank, merged = queue[0] // n, []
            while queue and queue[0] // n == rank:
                first = heapq.heappop(queue) % n
                second = end[first]
                # A merge leaves its neighbours' old entries in the queue (lazy deletion): skip an entry whose pair
                # has changed since. Only one pair has a given rank, so the same rank means the same pair.
                found = merge_of(ids[first] * stride + ids[second]) if first < second < n else None
                if found is None or found[0] != rank:
                    continue
                ids[first] = found[1]
                end[first], end[second] = end[second], 0
                if end[first] < n:
                    prev[end[first]] = first
                merged.append(first)
            for first in merged:  # the new pairs: (left neighbour, merged symbol) and (merged symbol, right neighbour)
                for left in (prev[first], first):
                    if left >= 0 and end[left] < n:
                        found = merge_of(ids[left] * stride + ids[end[left]])
                        if found:
                            heapq.heappush(queue, found[0] * n + left)
        return tuple(ids[first] for first in _symbol_starts(end))

    def encode_ordinary(self, text: str, *, max_tokens: int | None = None) -> list[int]:
        """Encode `text`, treating any special-token text as plain text."""
        return self.encode(text, disallowed_special=(), max_tokens=max_tokens)

    def encode(self, text: str, *, allowed_special: Collection[str] | Literal["all"] = frozenset(),
               disallowed_special: Collection[str] | Literal["all"] = "all",
               max_tokens: int | None = None) -> list[int]:
        """Encode `text` to ids; special tokens follow tiktoken's rules (disallowed ones raise InputError).

        With `max_tokens`, raise InputError as soon as the ids outnumber it, without encoding the rest of the text."""
        allowed = self._allowed_special(text, allowed_special, disallowed_special)
        text = replace_lone_surrogates(text)
        limit = math.inf if max_tokens is None else max_tokens
        if not allowed:
            return self._extend([], text, limit)
        # Split on the allowed special tokens (kept by the capture group); text between is encoded normally.
        names = sorted(allowed, key=len, reverse=True)
        ids: list[int] = []
        for k, chunk in enumerate(regex.splititer("(" + "|".join(map(regex.escape, names)) + ")", text)):
            if k % 2 == 0:
                self._extend(ids, chunk, limit)
            elif len(ids) < limit:  # a special token is one id
                ids.append(self.special_tokens[chunk])
            else:
                raise _too_many_tokens(limit)
        return ids

    def _allowed_special(self, text: str, allowed_special: Collection[str] | Literal["all"],
                         disallowed_special: Collection[str] | Literal["all"]) -> set[str]:
        """The special tokens to encode as their ids; InputError if `text` holds a disallowed one."""
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise InputError(f"not special tokens of this vocabulary: {sorted(unknown)}")
        disallowed = set(self.special_tokens) - allowed if disallowed_special == "all" else set(disallowed_special)
        for name in disallowed:
            if name in text:  # text that looks like a control token is refused unless asked for
                raise InputError(
                    f"the text contains the special token {name!r}. Pass allowed_special={{{name!r}}} (or 'all') "
                    f"to encode it as its id, or disallowed_special=() to encode it as plain text."
                )
        return allowed

    def _extend(self, ids: list[int], text: str, limit: float) -> list[int]:
        """Append the ids of `text`, taken as plain text, to `ids`; InputError once they outnumber `limit`."""
        # findall is the faster split; finditer hands out one piece at a time, so a limited encode stops early.
        pieces = self.pattern.findall(text) if limit == math.inf else (m[0] for m in self.pattern.finditer(text))
        cached_bpe = self._cached_bpe
        for piece in pieces:
            if len(piece) <= CACHED_PIECE_CHARS:
                ids.extend(cached_bpe(piece))
            else:
                # A token holds at most _longest_token bytes, and a piece has at least one byte per character:
                # refuse a piece whose fewest possible ids cannot fit before spending O(n log n) on it.
                if len(ids) + len(piece) / self._longest_token > limit:
                    raise _too_many_tokens(limit)
                ids.extend(self._bpe(piece))
            if len(ids) > limit:
                raise _too_many_tokens(limit)
        return ids

    # ---- decoding -----------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenate the bytes of each id."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)  # also torch / numpy arrays
        try:
            return b"".join([self.decoder[i] for i in ids])
        except KeyError:
            bad = next(i for i in ids if i not in self.decoder)
            raise InputError(f"token id {bad!r} is not in the vocabulary (ids are 0..{self.n_vocab - 1})") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text; byte sequences that are not valid UTF-8 become U+FFFD (errors="replace")."""
        # Any encode() output decodes exactly; arbitrary ids may cut a multi-byte character in two.
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def replace_lone_surrogates(text: str) -> str:
    """`text` with each lone surrogate ("\ud800"), which has no UTF-8 form, replaced by U+FFFD, as tiktoken does."""
    if LONE_SURROGATE.search(text):
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _read(path: Path) -> str:
    """The UTF-8 text of a tokenizer file, with errors that name it."""
    try:
        return read_text(path, TOKENIZER_FILE_BYTES, error=CheckpointError)  # a FIFO is refused
    except FileNotFoundError:
        raise WeightsNotFoundError(f"tokenizer file {path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"cannot read tokenizer file {path}: {error}") from None


def _symbol_starts(end: list[int]) -> Iterable[int]:
    """Where each symbol of a merged piece starts, left to right, following the ends of the symbols."""
    start = 0
    while start < len(end):
        yield start
        start = end[start]


def _too_many_tokens(limit: float) -> InputError:
    """The error for a text that needs more than max_tokens ids."""
    return InputError(f"the text is longer than max_tokens={limit} tokens: shorten it")
