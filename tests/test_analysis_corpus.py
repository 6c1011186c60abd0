"""Reading a corpus and a text within bounds: the cuts that bound memory, honest progress, early refusal."""

from __future__ import annotations

import pytest

from minigpt_geom import corpus
from minigpt_geom.corpus import MAX_PIECE_CHARS, corpus_windows, encode_plain, text_chunks
from minigpt_geom.analysis.text import encode_text
from minigpt_geom.errors import InputError
from minigpt_geom.tokenizer import Tokenizer

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
