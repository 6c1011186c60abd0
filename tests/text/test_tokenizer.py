"""The tokenizer against two independent implementations, tiktoken and Hugging Face `tokenizers`.

No GPT-2 files are needed: the tests train a small byte-level BPE vocabulary on a corpus they make, write it
in GPT-2's file formats, and load it into all three tokenizers (the fixtures: conftest.py beside this file).
The property tests, on inputs hypothesis draws, are in test_tokenizer_properties.py.
"""

from __future__ import annotations

import itertools
import json
import random

import pytest
import torch

from bpe_files import EOT, SAMPLES, make_corpus, write_vocab
from helpers import in_memory
from minigpt_geom.errors import CheckpointError, InputError, WeightsNotFoundError
from minigpt_geom.text.fast_tokenizer import LIBRARIES, FastTokenizer
from minigpt_geom.text.tokenizer import Tokenizer



def test_trained_vocabulary_merges_something(ours, tik):
    """Guard against a vacuous comparison: the samples must use multi-byte tokens, including non-ASCII ones."""
    ids = [i for s in SAMPLES for i in tik.encode_ordinary(s)]
    assert sum(len(tik.decode_single_token_bytes(i)) > 1 for i in ids) > 100
    assert any(len(tik.decode_single_token_bytes(i)) > 2 and max(tik.decode_single_token_bytes(i)) > 127 for i in ids)
    assert ours.n_vocab == tik.n_vocab == tik.eot_token + 1
    assert ours.eot_token == tik.eot_token


@pytest.mark.parametrize("text", SAMPLES, ids=range(len(SAMPLES)))
def test_encode_matches_tiktoken_and_hf(ours, tik, hf, text):
    ids = ours.encode(text)
    assert ids == tik.encode(text)
    assert ids == hf.encode(text).ids
    assert ours.decode(ids) == text == tik.decode(ids) == hf.decode(ids)


def test_long_document_matches(ours, tik, hf):
    text = make_corpus(seed=1)
    ids = ours.encode(text)
    assert ids == tik.encode(text) == hf.encode(text).ids
    assert ours.decode(ids) == text


SPECIAL = f"Document one.{EOT}Document two {EOT} and<|endoftext|>\n"


def test_special_token_disallowed_by_default(ours, tik):
    with pytest.raises(ValueError):
        tik.encode(SPECIAL)
    with pytest.raises(InputError, match="endoftext"):
        ours.encode(SPECIAL)


@pytest.mark.parametrize("allowed", ["all", {EOT}])
def test_special_token_allowed(ours, tik, allowed):
    ids = ours.encode(SPECIAL, allowed_special=allowed)
    assert ids == tik.encode(SPECIAL, allowed_special=allowed)
    assert ids.count(ours.eot_token) == 3
    assert ours.decode(ids) == SPECIAL


def test_special_token_as_plain_text(ours, tik, hf):
    ids = ours.encode(SPECIAL, disallowed_special=())
    assert ids == tik.encode(SPECIAL, disallowed_special=()) == hf.encode(SPECIAL).ids
    assert ours.eot_token not in ids
    assert ours.encode_ordinary(SPECIAL) == tik.encode_ordinary(SPECIAL)


def test_openai_files_give_same_ids(files, tik):
    """OpenAI's encoder.json + vocab.bpe are vocab.json + merges.txt under other names: from_files loads them."""
    openai = Tokenizer.from_files(files / "encoder.json", files / "vocab.bpe")
    text = " ".join(SAMPLES)
    assert openai.encode(text) == tik.encode(text)


def test_from_pretrained_directory(files, tik):
    text = " ".join(SAMPLES)
    assert Tokenizer.from_pretrained(files).encode(text) == tik.encode(text)
    assert Tokenizer.from_pretrained(str(files)).encode(text) == tik.encode(text)


def test_from_pretrained_preset_uses_drop_in(files, tik, tmp_path, monkeypatch):
    (tmp_path / "gpt2").mkdir()
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / "gpt2" / name).write_bytes((files / name).read_bytes())
    monkeypatch.setenv("MINIGPT_GEOM_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a failed drop-in lookup must not reach the network
    text = " ".join(SAMPLES)
    assert Tokenizer.from_pretrained("gpt2").encode(text) == tik.encode(text)


def test_from_pretrained_missing_files(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="vocab.json"):
        Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(WeightsNotFoundError, match="nope.json"):
        Tokenizer.from_files(tmp_path / "nope.json", tmp_path / "merges.txt")


def test_malformed_files_name_the_file(files, tmp_path):
    vocab_text = (files / "vocab.json").read_text(encoding="utf-8")
    merges_text = (files / "merges.txt").read_text(encoding="utf-8")
    cases = {
        "bad.json": ("{not json", merges_text),
        "list.json": ("[1, 2, 3]", merges_text),
        "nobytes.json": (json.dumps({"a": 0, EOT: 1}), "#version: 0.2\n"),
        "vocab.json": (vocab_text, merges_text + "zzzz qqqq\n"),
        "vocab2.json": (vocab_text, merges_text + "onlyone\n"),
    }
    for vocab_name, (vocab_body, merges_body) in cases.items():
        (tmp_path / vocab_name).write_text(vocab_body, encoding="utf-8")
        (tmp_path / "merges.txt").write_text(merges_body, encoding="utf-8")
        with pytest.raises(CheckpointError) as error:
            Tokenizer.from_files(tmp_path / vocab_name, tmp_path / "merges.txt")
        named = vocab_name if vocab_body != vocab_text else "merges.txt"
        assert named in str(error.value), (vocab_name, str(error.value))


@pytest.mark.parametrize("bad", [10**6, -1, 2**63])
def test_decode_out_of_range_names_the_id(ours, bad):
    with pytest.raises(InputError, match=str(bad)):
        ours.decode([1, 2, bad])


def test_decode_accepts_tensors(ours, tik):
    text = SAMPLES[2]
    assert ours.decode(torch.tensor(tik.encode(text))) == text


def test_merges_without_version_header(files, tik, tmp_path):
    merges = (files / "merges.txt").read_text(encoding="utf-8")
    (tmp_path / "merges.txt").write_text(merges.split("\n", 1)[1], encoding="utf-8")
    headerless = Tokenizer.from_files(files / "vocab.json", tmp_path / "merges.txt")
    text = " ".join(SAMPLES)
    assert headerless.encode(text) == tik.encode(text)


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "x \ud83d\ude00 y"])
def test_lone_surrogates_like_tiktoken(ours, tik, text):
    """Lone surrogates have no UTF-8 form; tiktoken replaces them with U+FFFD, and so do we."""
    assert ours.encode(text) == tik.encode(text)


# ---- long pieces: BPE in O(n log n) ----------------------------------------------------------------------

def random_text(alphabet: str, length: int, seed: int = 0) -> str:
    """`length` characters drawn from `alphabet`."""
    return "".join(random.Random(seed).choices(alphabet, k=length))


LONG_PIECES = {
    "letters 10k": random_text("abcdefghijklmnopqrstuvwxyz", 10_000),
    "letters 100k": random_text("etaoinshrdlucmfwypvbgkjqxz", 100_000),
    "syllables 30k": "".join(random.Random(1).choices(["th", "e", "an", "in", "er", "ing", "qu"], k=12_000)),
    "digits 20k": random_text("0123456789", 20_000),
    "mixed scripts 20k": random_text("aeinrsté中文ü日本語αβγдежщ한국ÅÉ", 20_000),
    "whitespace 20k": random_text(" \t\n", 20_000) + "end",
}


def test_trained_vocabulary_merges_long_pieces(ours, runs):
    """Guard against a vacuous comparison: every long piece goes through at least a hundred merges."""
    for name, text in LONG_PIECES.items():
        assert len(text.encode("utf-8")) - len(ours.encode(text)) >= 100, name
    assert len(runs[0].encode("a" * 1000)) < 100


@pytest.mark.parametrize("name", LONG_PIECES)
def test_long_pieces_match_tiktoken(ours, tik, name):
    text = LONG_PIECES[name]
    ids = ours.encode(text)
    assert ids == tik.encode(text)
    assert ours.decode(ids) == text


@pytest.mark.parametrize("text", ["a" * 50_000, "a" * 10_001, "7" * 10_001, " " * 10_000, "ab" * 5_000 + "a"])
def test_long_runs_match_tiktoken(runs, text):
    """Runs of one character overlap their own pairs: "aaa" must merge as "aa" "a", leftmost first."""
    ours, tik = runs
    assert ours.encode(text) == tik.encode(text)


def test_cache_holds_only_short_pieces_and_at_most_cache_size(ours):
    """The cache cannot grow with the text: long pieces skip it, and it keeps cache_size pieces at most."""
    tokenizer = in_memory([(b"a", b"b"), (b"ab", b"c")], cache_size=8)
    long_pieces = [" " + random_text("abc", 100, seed) for seed in range(200)]  # each piece > 64 characters
    tokenizer.encode("".join(long_pieces))
    assert tokenizer._cached_bpe.cache_info().currsize == 0
    words = [" " + "".join(letters) for letters in itertools.product("abc", repeat=4)]  # 81 distinct pieces
    tokenizer.encode("".join(words))
    assert tokenizer._cached_bpe.cache_info().currsize == 8
    assert ours._cached_bpe.cache_info().maxsize == 1 << 16


# ---- limits ------------------------------------------------------------------------------------------

def test_max_tokens_allows_exactly_the_limit(ours, tik):
    text = " ".join(SAMPLES)
    ids = tik.encode(text)
    assert ours.encode(text, max_tokens=len(ids)) == ids == ours.encode_ordinary(text, max_tokens=len(ids))
    with pytest.raises(InputError, match=f"max_tokens={len(ids) - 1}"):
        ours.encode(text, max_tokens=len(ids) - 1)
    with pytest.raises(InputError, match=f"max_tokens={len(ids) - 1}"):
        ours.encode_ordinary(text, max_tokens=len(ids) - 1)
    assert ours.encode("", max_tokens=0) == []


def test_max_tokens_counts_special_tokens(ours):
    ids = ours.encode(SPECIAL, allowed_special="all")
    assert ours.encode(SPECIAL, allowed_special="all", max_tokens=len(ids)) == ids
    with pytest.raises(InputError, match=f"max_tokens={len(ids) - 1}"):
        ours.encode(SPECIAL, allowed_special="all", max_tokens=len(ids) - 1)
    with pytest.raises(InputError, match="max_tokens=0"):
        ours.encode(EOT, allowed_special="all", max_tokens=0)


def test_max_tokens_stops_encoding_early(files):
    """Pieces after the limit are never encoded: the cache saw only those before it."""
    tokenizer = Tokenizer.from_files(files / "vocab.json", files / "merges.txt")
    words = " ".join("".join(letters) for letters in itertools.product("xyz", repeat=5))  # 243 distinct pieces
    with pytest.raises(InputError, match="max_tokens=10"):
        tokenizer.encode(words, max_tokens=10)
    assert tokenizer._cached_bpe.cache_info().misses <= 11


def test_max_tokens_refuses_a_huge_piece_without_merging_it(ours, monkeypatch):
    monkeypatch.setattr(ours, "_bpe", lambda piece: pytest.fail("a piece that cannot fit was merged"))
    with pytest.raises(InputError, match="max_tokens=1000"):
        ours.encode("x" * 1_000_000, max_tokens=1000)


def test_check_fits(ours):
    ours.check_fits(ours.n_vocab)
    ours.check_fits(ours.n_vocab + 47)  # a model may pad its vocabulary
    with pytest.raises(InputError, match=f"tokenizer has {ours.n_vocab} ids .* holds {ours.n_vocab - 1}"):
        ours.check_fits(ours.n_vocab - 1)


# ---- the fast backend (tiktoken, or Hugging Face `tokenizers`): the reference's ids ---------------------

@pytest.mark.parametrize("text", [*SAMPLES, SPECIAL, make_corpus(seed=1), *LONG_PIECES.values()])
def test_fast_backend_gives_the_reference_ids(ours, tik, fast, text):
    ids = fast.encode_ordinary(text)
    assert ids == ours.encode_ordinary(text) == tik.encode_ordinary(text)  # tiktoken: the independent oracle


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("text", ["a" * 10_001, "7" * 10_001, " " * 10_000, "ab" * 5_000 + "a"])
def test_fast_backend_on_long_runs(runs, tmp_path, text, library):
    folder = tmp_path
    reference, tik = runs  # the same vocabulary, written again here for the fast backend to read
    write_vocab(folder, 40, "\n".join(f"{'a' * k} {'7' * k}{' ' * k}x {'ab' * k}" for k in range(1, 40)))
    ids = FastTokenizer(folder / "vocab.json", folder / "merges.txt", library=library).encode_ordinary(text)
    assert ids == reference.encode_ordinary(text) == tik.encode_ordinary(text)
