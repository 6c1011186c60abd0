"""A byte-level BPE trained on a corpus (issue 28, item 6): `tokenizer` writes vocab.json and merges.txt that the
reference tokenizer reads and encodes with exactly as Hugging Face `tokenizers` does (the oracle), held-out and
generated text alike, with GPT-2's pre-tokenising regex and <|endoftext|>."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt_geom.cli import main
from minigpt_geom.text.corpus import corpus_files
from minigpt_geom.text.fast_tokenizer import LIBRARIES, FastTokenizer
from minigpt_geom.text.token_files import load_tokens
from minigpt_geom.text.tokenizer import ENDOFTEXT, GPT2_PATTERN, Tokenizer

tokenizers = pytest.importorskip("tokenizers")

from minigpt_geom.text.bpe_training import train_bpe, write_bpe  # noqa: E402

VOCAB_SIZE = 700
HELD_OUT = ["argparse.py", "json/decoder.py"]  # standard-library files the corpus fixture does not hold


@pytest.fixture(scope="module")
def folder(corpus, tmp_path_factory):
    """(the `tokenizers` object as trained, the folder it wrote vocab.json and merges.txt into)."""
    folder = tmp_path_factory.mktemp("bpe")
    tokenizer = train_bpe(corpus_files(corpus, "*.py"), VOCAB_SIZE)
    assert sorted(path.name for path in write_bpe(tokenizer, folder)) == ["merges.txt", "vocab.json"]
    return tokenizer, folder


@pytest.fixture(scope="module")
def trained(folder):
    """(the `tokenizers` object as trained, the reference Tokenizer reading the two files it wrote)."""
    tokenizer, where = folder
    return tokenizer, Tokenizer.from_files(where / "vocab.json", where / "merges.txt")


def held_out_text() -> str:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return "".join((stdlib / name).read_text(encoding="utf-8") for name in HELD_OUT)


def test_the_vocabulary_has_every_byte_the_merges_and_endoftext(trained):
    hf, ours = trained
    assert hf.get_vocab_size() == ours.n_vocab == VOCAB_SIZE
    assert ours.special_tokens == {ENDOFTEXT: hf.token_to_id(ENDOFTEXT)}
    assert all(bytes([b]) in ours.encoder for b in range(256))


def test_the_reference_encodes_held_out_text_as_tokenizers_does(trained):
    hf, ours = trained
    text = held_out_text()
    ids = ours.encode_ordinary(text)
    assert ids == hf.encode(text, add_special_tokens=False).ids
    assert len(ids) < len(text.encode("utf-8")) / 2  # the merges learned on Python source compress Python source
    assert ours.decode(ids) == hf.decode(ids) == text


@pytest.mark.parametrize("library", LIBRARIES)
def test_the_fast_backends_read_the_trained_files_alike(folder, trained, library):
    """`prepare`'s fast backend (tiktoken, ranks = ids; or `tokenizers` reading the files) gives the same ids."""
    pytest.importorskip(library)
    text = held_out_text()
    fast = FastTokenizer(folder[1] / "vocab.json", folder[1] / "merges.txt", library=library)
    assert fast.encode_ordinary(text) == trained[1].encode_ordinary(text)


_alphabet = st.sampled_from(list("defin selfreturn()._:\n    'sllve'reimport0123456789#=é中😀")) | st.characters(codec="utf-8")


@pytest.mark.slow
@settings(max_examples=200, deadline=None, database=None)
@given(st.text(_alphabet, max_size=80) | st.text(max_size=30))
def test_the_reference_encodes_generated_text_as_tokenizers_does(trained, text):
    hf, ours = trained
    assert ours.encode(text, allowed_special="all") == hf.encode(text, add_special_tokens=False).ids


def test_endoftext_is_one_id_between_documents(trained):
    hf, ours = trained
    text = f"def f():\n    return 1\n{ENDOFTEXT}class A:\n    pass\n"
    ids = ours.encode(text, allowed_special="all")
    assert ids == hf.encode(text).ids and ids.count(ours.eot_token) == 1


def test_no_learned_token_crosses_a_gpt2_piece(trained):
    """Merges happen inside the pieces GPT-2's regex cuts: every learned token that is whole UTF-8 text is itself
    one piece (' return', '    ', \"'s\"), never two ('e.', ' (')."""
    _, ours = trained
    whole = [token.decode("utf-8") for token in ours.encoder if len(token) > 1 and is_utf8(token)]
    assert len(whole) > VOCAB_SIZE / 2
    assert all(regex.findall(GPT2_PATTERN, text) == [text] for text in whole)


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_tokenizer_command_then_prepare_and_train_with_it(corpus, tmp_path, capsys):
    vocab = tmp_path / "vocab"
    assert main(["tokenizer", str(corpus), "--pattern", "*.py", "--vocab-size", "500", "-o", str(vocab),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("500 tokens (256 bytes, <|endoftext|> and 243 learned) from 6 file(s)")
    assert sorted(p.name for p in vocab.iterdir()) == ["merges.txt", "vocab.json"]
    assert len(json.loads((vocab / "vocab.json").read_text(encoding="utf-8"))) == 500
    assert main(["prepare", str(corpus), "--pattern", "*.py", "--tokenizer", str(vocab), "-o", str(tmp_path / "ids"),
                 "--quiet"]) == 0
    data = load_tokens(tmp_path / "ids")
    assert int(np.max(data.train)) < 500 and data.meta["vocab_size"] <= 500


@pytest.mark.parametrize("argv, message", [
    (["--vocab-size", "100", "--pattern", "*.py"], "at least 257"),
    (["--vocab-size", "500", "--pattern", "*.nothing"], "no files matching"),
])
def test_bad_tokenizer_arguments_are_one_line(corpus, tmp_path, capsys, argv, message):
    out = tmp_path / "vocab"
    assert main(["tokenizer", str(corpus), "-o", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err and not out.exists()


def test_a_models_folder_keeps_its_tokenizer(corpus, tiny_checkpoint, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    before = (model / "vocab.json").read_bytes()
    assert main(["tokenizer", str(corpus), "--pattern", "*.py", "--vocab-size", "500", "-o", str(model)]) == 2
    assert "holds a model" in capsys.readouterr().err and (model / "vocab.json").read_bytes() == before
