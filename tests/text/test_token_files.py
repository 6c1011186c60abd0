"""Token files: streamed and parallel tokenising gives the ids of whole files, the split by documents, outputs
kept out of inputs, and damaged caches refused in one line."""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings

import numpy as np
import pytest

from helpers import requires
from minigpt_geom.text import token_files as data
from minigpt_geom.cli import main
from minigpt_geom.text.corpus import corpus_files
from minigpt_geom.text.token_files import cache_folder, load_tokens, prepare
from minigpt_geom.errors import InputError
from minigpt_geom.text.fast_tokenizer import BackendWarning, FastTokenizer, choose_backend, sample_texts
from minigpt_geom.text.tokenizer import Tokenizer

WORDS = ["the", "cat", "sat", "on", "mat", "café", "naïve", "中文", "😀", "it's", "don't", "42", "3.14", "<|endoftext|>",
         "def", "f(x):", "return", "x", "==", "!", "\t", "    "]


def random_text(rng: random.Random, words: int) -> str:
    """Words, numbers, code-ish symbols and mixed whitespace (CRLF included), no piece over 256 characters."""
    return "".join(rng.choice(WORDS) + rng.choice([" ", " ", " ", "\n", "\r\n", "  ", ""]) for _ in range(words))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Twelve text files (one long enough for several documents once DOCUMENT_CHARS is small), an empty file,
    a binary file and a hidden one."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for k in range(12):
        (folder / f"doc{k:02}.txt").write_bytes(random_text(rng, 300 if k else 3000).encode("utf-8"))
    (folder / "sub").mkdir()
    (folder / "sub" / "empty.txt").write_bytes(b"")
    (folder / "image.bin").write_bytes(bytes(range(256)) * 4)  # not UTF-8: left out
    (folder / ".hidden.txt").write_text("never read")
    return folder


@pytest.fixture
def small_documents(monkeypatch):
    monkeypatch.setattr(data, "DOCUMENT_CHARS", 2000)  # doc00 (~10k characters) becomes several documents


def whole_file_ids(tokenizer: Tokenizer, files) -> list[np.ndarray]:
    """The oracle: each file read whole, its bytes as they are (no newline translation), then <|endoftext|>."""
    return [np.array(tokenizer.encode_ordinary(path.read_bytes().decode("utf-8")) + [tokenizer.eot_token])
            for path in files]


@requires("tiktoken")
def test_streamed_and_parallel_prepare_write_the_ids_of_whole_files(corpus, tiny_checkpoint, tmp_path,
                                                                    small_documents):
    tokenizer = Tokenizer.from_pretrained(tiny_checkpoint)
    text_files = [p for p in corpus_files(corpus, "*") if p.suffix == ".txt"]
    expected = np.concatenate(whole_file_ids(tokenizer, text_files))
    written = {}
    for backend in ("reference", "fast"):
        for workers in (1, 2):
            out = tmp_path / f"{backend}-{workers}"
            tokens = prepare(corpus, tiny_checkpoint, out, backend=backend, workers=workers, split="last",
                             progress=False)
            assert tokens.meta["tokenizer_backend"] == backend
            written[backend, workers] = [(out / name).read_bytes() for name in ("train.bin", "val.bin")]
    first = written["reference", 1]
    assert all(files == first for files in written.values())  # every core, either backend: the same files
    tokens = load_tokens(tmp_path / "reference-1")
    np.testing.assert_array_equal(np.concatenate([tokens.train, tokens.val]), expected)
    assert len(tokens.val) == round(0.1 * len(expected))  # the "last" rule: the tail of the ids
    assert tokens.meta["documents"] > len(text_files)  # doc00 was cut into several documents
    assert [name for name, *_ in tokens.meta["files"]] == [str(p) for p in text_files]  # image.bin left out


def test_the_split_holds_out_whole_documents_drawn_with_the_seed(corpus, tiny_checkpoint, tmp_path):
    tokenizer = Tokenizer.from_pretrained(tiny_checkpoint)
    per_file = whole_file_ids(tokenizer, [p for p in corpus_files(corpus, "*") if p.suffix == ".txt"])
    held_sets = []
    for seed in range(4):
        tokens = prepare(corpus, tiny_checkpoint, tmp_path / str(seed), split_seed=seed, workers=1, progress=False)
        val, offset, held = tokens.val, 0, []
        for ids in per_file:  # the held-out files appear whole, in corpus order
            if np.array_equal(val[offset:offset + len(ids)], ids):
                held.append(True)
                offset += len(ids)
            else:
                held.append(False)
        assert offset == len(val) and sum(held) == tokens.meta["val_documents"] >= 1
        np.testing.assert_array_equal(tokens.train, np.concatenate([i for i, h in zip(per_file, held) if not h]))
        total = sum(map(len, per_file))
        assert 0 < len(val) <= 0.2 * total  # within twice val_fraction
        held_sets.append(tuple(held))
    assert len(set(held_sets)) > 1  # the seed draws the documents
    again = prepare(corpus, tiny_checkpoint, tmp_path / "again", split_seed=0, workers=2, progress=False)
    assert (tmp_path / "again" / "val.bin").read_bytes() == (tmp_path / "0" / "val.bin").read_bytes()
    assert again.meta["split"] == "documents"


def test_one_document_is_split_at_its_tail(corpus, tiny_checkpoint, tmp_path):
    tokens = prepare(corpus / "doc01.txt", tiny_checkpoint, tmp_path, workers=1, progress=False)
    assert tokens.meta["split"] == "last" and tokens.meta["documents"] == 1


@requires("tiktoken")
def test_the_backend_is_checked_on_a_sample_of_the_corpus(corpus, tiny_checkpoint, monkeypatch):
    files = corpus_files(corpus, "*.txt")
    sample = sample_texts(files)
    texts = [path.read_bytes().decode("utf-8") for path in files]
    assert len(sample) == 5  # the probe, then stretches of 4 random files (a cut character becomes U+FFFD)
    assert all(any(text.strip("\ufffd") in whole for whole in texts) for text in sample[1:])
    assert choose_backend(tiny_checkpoint, "fast", files) == "fast"  # it agrees on the sample
    assert choose_backend(tiny_checkpoint, "reference", files) == "reference"
    assert choose_backend(tiny_checkpoint, "auto", files) in ("fast", "reference")  # the faster on the sample
    encode = FastTokenizer.encode_ordinary
    monkeypatch.setattr(FastTokenizer, "encode_ordinary", lambda self, text: [*encode(self, text)[:-1], 0])
    with pytest.raises(InputError, match="disagrees with the reference"):
        choose_backend(tiny_checkpoint, "fast", files)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert choose_backend(tiny_checkpoint, "auto", files) == "reference"
    assert [w.category for w in caught] == [BackendWarning]


def test_outputs_inside_the_corpus_are_not_read(corpus, tiny_checkpoint, tmp_path):
    folder = tmp_path / "corpus"
    shutil.copytree(corpus, folder)
    first = prepare(folder, tiny_checkpoint, folder / "tokens", workers=1, progress=False)
    (folder / "tokens" / "notes.txt").write_text("written by a later step of the same run")
    second = prepare(folder, tiny_checkpoint, folder / "tokens", workers=1, progress=False)
    assert second.meta["files"] == first.meta["files"]
    (folder / "run").mkdir()
    key = cache_folder(folder, tiny_checkpoint, exclude=[folder / "run"])
    (folder / "run" / "log.csv").write_text("step,loss\n")  # a training run writing into the corpus
    assert cache_folder(folder, tiny_checkpoint, exclude=[folder / "run"]) == key
    assert folder / "run" / "log.csv" not in corpus_files(folder, "*", exclude=[folder / "run"])


@pytest.fixture
def damaged(corpus, tiny_checkpoint, tmp_path):
    tokens = tmp_path / "tokens"
    prepare(corpus, tiny_checkpoint, tokens, workers=1, progress=False)
    return tokens


def rewrite_meta(folder, change) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps(change(meta)))


@pytest.mark.parametrize("damage, problem", [
    (lambda f: (f / "train.bin").write_bytes((f / "train.bin").read_bytes()[:100]), "train.bin holds 100 bytes"),
    (lambda f: (f / "val.bin").write_bytes(b"\xff\xff" + (f / "val.bin").read_bytes()[2:]), "the id 65535"),
    (lambda f: (f / "meta.json").write_text("[1, 2]"), "not a JSON object"),
    (lambda f: (f / "meta.json").write_text("{"), "cannot be read"),
    (lambda f: rewrite_meta(f, lambda m: {**m, "train_tokens": "many"}), "'train_tokens' is missing or not"),
    (lambda f: rewrite_meta(f, lambda m: {k: v for k, v in m.items() if k != "vocab_size"}), "'vocab_size'"),
    (lambda f: ((f / "train.bin").unlink(), os.mkfifo(f / "train.bin")), "not a regular file"),
])
def test_a_damaged_token_cache_is_refused_in_one_line(damaged, damage, problem, tiny_checkpoint, tmp_path, capsys):
    damage(damaged)
    with pytest.raises(InputError, match=f"{problem}.*delete {damaged}"):
        load_tokens(damaged)
    assert main(["train", str(damaged), "--weights", str(tiny_checkpoint), "-o", str(tmp_path / "run"),
                 "--steps", "1"]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "delete" in message


def test_prepare_names_its_options_in_errors(corpus, tiny_checkpoint, tmp_path, capsys):
    assert main(["prepare", str(corpus), "-o", str(tmp_path / "out"), "--tokenizer", str(tiny_checkpoint),
                 "--pattern", "*.none"]) == 2
    assert "--pattern" in capsys.readouterr().err
    assert main(["prepare", str(corpus), "-o", str(tmp_path / "out"), "--tokenizer", str(tiny_checkpoint),
                 "--tokenizer-backend", "reference", "--val-split", "last"]) == 0
    assert "reference tokenizer" in capsys.readouterr().out
    assert not (tmp_path / "out" / "out").exists()
    assert [p.name for p in (tmp_path / "out").glob(".*")] == [".prepare.lock"]  # no temporaries: the lock alone


@pytest.fixture
def bounded_wait():
    """A SIGALRM after 20 s, so that a read that waits for ever (a FIFO's blocking open) fails the test instead."""
    import signal

    def timed_out(number, frame):
        raise TimeoutError("the read waited on a FIFO")

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_defect_8_a_corpus_file_replaced_by_a_fifo_during_prepare_is_refused_and_leaves_no_temporary(
        tiny_checkpoint, tmp_path, monkeypatch, bounded_wait):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("a.txt", "b.txt"):
        (folder / name).write_text("the cat sat on the mat. " * 200, encoding="utf-8")
    checked = data.is_utf8

    def then_replace(path):  # b.txt is listed and checked, then becomes a FIFO before it is tokenised
        answer = checked(path)
        if path.name == "b.txt":
            path.unlink()
            os.mkfifo(path)
        return answer

    monkeypatch.setattr(data, "is_utf8", then_replace)
    out = tmp_path / "tokens"
    with pytest.raises(InputError, match=r"b\.txt is a FIFO \(named pipe\), not a regular file"):
        prepare(folder, tiny_checkpoint, out, backend="reference", workers=1, progress=False)
    assert [p.name for p in out.glob(".*")] == [".prepare.lock"]  # no temporary ids file or stage: the lock alone


def test_defect_8_every_corpus_reader_refuses_a_fifo_at_once(tiny_checkpoint, tmp_path, bounded_wait):
    from minigpt_geom.analysis.vocabulary import text_counts
    from minigpt_geom.text.corpus import text_chunks

    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    tokenizer = Tokenizer.from_pretrained(tiny_checkpoint)
    for read in (lambda: list(text_chunks(fifo)), lambda: data.is_utf8(fifo), lambda: data.largest_id(fifo),
                 lambda: text_counts([fifo], tokenizer, tokenizer.n_vocab)):
        with pytest.raises(InputError, match="is a FIFO"):
            read()
    assert sample_texts([fifo])[1:] == []  # the backend's sample skips it: the corpus reader names it
