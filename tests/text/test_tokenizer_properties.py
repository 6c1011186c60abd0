"""The tokenizer on arbitrary text and arbitrary merge lists, drawn by hypothesis: round trips, tiktoken's and
Hugging Face `tokenizers`' ids, the fast backend's, and the textbook BPE loop's tokens."""

from __future__ import annotations

from bpe_files import textbook_bpe
from helpers import in_memory, needs

needs("hypothesis")  # every test here draws its inputs with it
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# Characters BPE has merges for, plus arbitrary Unicode: random strings then really exercise merges.
_alphabet = st.sampled_from(list("thean ingerst'sldvmRST \t\n\r.,!0123456789éü中文😀‍👩")) | st.characters(codec="utf-8")
_fast = settings(max_examples=150, deadline=None, database=None)


@_fast
@given(st.text())
def test_round_trip_arbitrary_text(ours, text):
    assert ours.decode(ours.encode(text, disallowed_special=())) == text


@_fast
@given(st.text(_alphabet, max_size=60) | st.text(max_size=30))
def test_matches_oracles_on_arbitrary_text(ours, tik, hf, text):
    ids = ours.encode(text, disallowed_special=())
    assert ids == tik.encode(text, disallowed_special=())
    assert ids == hf.encode(text).ids
    assert ours.decode(ids) == text


@_fast
@given(st.lists(st.integers(0, 256 + 600), max_size=20))
def test_decode_arbitrary_ids_like_tiktoken(ours, tik, ids):
    """Ids that cut a character in two decode with U+FFFD, as tiktoken's errors="replace"."""
    assert ours.decode(ids) == tik.decode(ids)
    assert ours.decode_bytes(ids) == tik.decode_bytes(ids)


_token = st.text("abc", min_size=1, max_size=3).map(str.encode)


@_fast
@given(st.lists(st.tuples(_token, _token), max_size=12), st.text("abc", max_size=80))
@example([(b"a", b"a")], "aaaaa")
@example([(b"a", b"a"), (b"aa", b"a"), (b"a", b"aa")], "aaaaaaa")
@example([(b"a", b"b"), (b"abc", b"ab"), (b"ab", b"c")], "abcabc")  # a pair made in a round ranks below it
def test_merges_like_the_textbook_algorithm(merges, word):
    """Any merge list, even one that learns a pair before its tokens exist, gives the textbook loop's tokens."""
    tokenizer = in_memory(merges)
    assert tokenizer.encode(word) == [tokenizer.encoder[t] for t in textbook_bpe(word.encode(), merges)]


@_fast
@given(st.text(_alphabet, max_size=60) | st.text(max_size=30))
@example("\ud800 lone \udfff surrogates")
def test_fast_backend_on_arbitrary_text(ours, fast, text):
    assert fast.encode_ordinary(text) == ours.encode_ordinary(text)
