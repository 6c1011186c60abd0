"""Reading a corpus and a text within bounds: the cuts that bound memory, honest progress, early refusal."""

from __future__ import annotations

import pytest

from minigpt_geom.text import corpus
from minigpt_geom.text.corpus import MAX_PIECE_CHARS, corpus_windows, encode_plain, text_chunks
from minigpt_geom.analysis.text import encode_text
from minigpt_geom.errors import InputError
from minigpt_geom.text.tokenizer import Tokenizer

TEXT = "To kill two birds with one stone. The cat sat on the mat.\n"


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint) -> Tokenizer:
    return Tokenizer.from_pretrained(tiny_checkpoint)


class Bar:
    """A stand-in for a tqdm bar: counts what it is told."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n


def test_a_stretch_without_whitespace_is_cut_at_the_carry_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "MAX_CARRY_CHARS", 100)
    path = tmp_path / "one_word.txt"
    path.write_text("a" * 1000 + " b " + "c" * 350, encoding="utf-8")
    chunks = list(text_chunks(path, chunk_bytes=30))
    assert "".join(chunks) == path.read_text(encoding="utf-8")  # nothing lost
    assert max(map(len, chunks)) <= 100 + 30  # the carry bound plus one block: memory stays bounded


@pytest.mark.slow
def test_pieces_longer_than_the_bound_are_cut_and_others_untouched(tokenizer):
    assert encode_plain(tokenizer, TEXT * 20) == tokenizer.encode_ordinary(TEXT * 20)  # the usual case: no cut
    word = "ab" * MAX_PIECE_CHARS  # one piece of 2 × MAX_PIECE_CHARS letters
    expected = [i for start in range(0, len(word), MAX_PIECE_CHARS)
                for i in tokenizer.encode_ordinary(word[start:start + MAX_PIECE_CHARS])]
    assert encode_plain(tokenizer, word) == expected
    text = TEXT + word + " " + TEXT  # only the long piece is cut; the pieces around it encode as ever
    assert encode_plain(tokenizer, text) == (tokenizer.encode_ordinary(TEXT) + expected
                                             + tokenizer.encode_ordinary(" " + TEXT))


def test_progress_counts_bytes_once_their_text_is_used(tokenizer, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT * 40, encoding="utf-8")
    size = path.stat().st_size
    bar = Bar()
    windows = corpus_windows([path], tokenizer, 16, chunk_bytes=256, progress=bar)
    seen = [bar.n for _ in windows]  # the bytes counted when each window is handed out
    assert seen[0] == 0  # the first block is being used: not counted yet
    assert seen == sorted(seen) and seen[len(seen) // 2] < size  # it grows with the windows, not ahead of them
    assert bar.n == size


def test_an_over_long_text_is_refused_without_being_encoded(tokenizer, monkeypatch):
    calls = []
    monkeypatch.setattr(tokenizer, "encode", lambda text, **kw: calls.append(len(text)) or [0] * len(text))
    with pytest.raises(InputError, match="longer than the model's context of 64 tokens"):
        encode_text(tokenizer, "word " * 200_000, 64)
    assert calls == []  # a million characters, refused from their length alone
    with pytest.raises(InputError, match="is 300 tokens long"):
        encode_text(tokenizer, "x" * 300, 64)  # short enough to encode: its length in tokens is told
    assert calls == [300]


def test_a_text_without_whitespace_is_encoded_in_bounded_runs(tokenizer, monkeypatch):
    monkeypatch.setattr(corpus, "MAX_RUN_CHARS", 50)
    text = ("abc,def.ghi;" * 40 + "x" * (MAX_PIECE_CHARS + 10)) * 3  # short pieces, then one long piece
    calls = []
    encode = tokenizer.encode_ordinary
    monkeypatch.setattr(tokenizer, "encode_ordinary", lambda t: calls.append(len(t)) or encode(t))
    ids = encode_plain(tokenizer, text)
    assert max(n for n in calls if n != MAX_PIECE_CHARS) <= 50 + 4  # a run stops at the first piece boundary past it
    pieces = corpus.PIECE.findall(text)  # the oracle: each piece alone, long ones in parts
    assert ids == [i for piece in pieces for start in range(0, len(piece), MAX_PIECE_CHARS)
                   for i in encode(piece[start:start + MAX_PIECE_CHARS])]


def brute_force_chunks(text: str, block: int) -> list[str]:
    """text_chunks' rule written out character by character: after each block, cut before the last whitespace
    character that is followed by a non-space one (nothing before it is ever cut again)."""
    chunks, start = [], 0
    for end in range(block, len(text) + block, block):
        seen = text[:end]
        cuts = [i for i in range(start + 1, len(seen) - 1) if seen[i].isspace() and not seen[i + 1].isspace()]
        if cuts:
            chunks.append(text[start:cuts[-1]])
            start = cuts[-1]
    return chunks + ([text[start:]] if start < len(text) else [])


@pytest.mark.parametrize("seed", range(6))
def test_chunks_are_cut_at_the_last_safe_place_of_what_was_read(tmp_path, seed):
    import random

    rng = random.Random(seed)
    alphabet = ["a", "bc", " ", "  ", "\n", "\t", ".", "x" * 40]  # ASCII: a block of bytes is one of characters
    text = "".join(rng.choice(alphabet) for _ in range(400))
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    block = rng.choice([7, 16, 33])
    assert list(text_chunks(path, chunk_bytes=block)) == brute_force_chunks(text, block)


def test_the_byte_test_for_long_pieces_misses_none_the_regex_finds():
    import random

    rng = random.Random(0)
    # ASCII and Unicode whitespace (U+00A0, U+3000, U+0085), \x1c (whitespace to str.isspace, not to the
    # pre-tokeniser), letters of 1-3 UTF-8 bytes, a lone surrogate
    spaces, others = [" ", "\n", "\u00a0", "\u3000", "\x85"], ["\x1c", "a", "é", "日", "\ud800", "1", "."]
    for _ in range(1000):
        alphabet = rng.choice([spaces, others, spaces + others])  # runs of mixed whitespace, of mixed text, or both
        lengths = rng.choice([[1, 3, 90, 300], [1, 3, 90]])  # long runs of one character, or only of several
        text = "".join(rng.choice(alphabet) * rng.choice(lengths) for _ in range(rng.randint(1, 12)))
        if corpus.LONG_RUN.search(text):
            assert corpus.may_hold_long_piece(text), repr(text[:60])
    ordinary = "To kill two birds with one stone, a café in 日本. " * 2000
    assert not corpus.may_hold_long_piece(ordinary)  # text with short pieces takes the fast path
    assert corpus.may_hold_long_piece("x" * MAX_PIECE_CHARS) and corpus.may_hold_long_piece("\u3000" * 300)
