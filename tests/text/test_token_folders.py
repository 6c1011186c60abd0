"""Token folders written aside and checked against their tokenizer, and a corpus's odd files named (issue 27).
Each test names the issue's defect it holds."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from minigpt_geom.cli import main
from minigpt_geom.text import token_files
from minigpt_geom.text.token_files import load_tokens, prepare

TEXT = "To kill two birds with one stone. The cat sat on the mat, and the dog ate the bone. " * 40


def one_line_error(capsys, code: int) -> str:
    """The stderr of a command that failed with exit code 2: exactly one line."""
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, (code, err)
    return err


def small_corpus(folder: Path, n_files: int = 3) -> Path:
    """A folder of a few UTF-8 text files (a few thousand tokens of the tests' tiny vocabulary)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (folder / f"part{i}.txt").write_text(f"Part {i}. " + TEXT, encoding="utf-8")
    return folder


def test_defect_14_a_prepare_that_fills_the_disk_keeps_the_earlier_token_folder(tiny_checkpoint, tmp_path,
                                                                                monkeypatch):
    """The disk fills while the new val.bin is written: the earlier train.bin, val.bin and meta.json are whole
    and load as before (they used to lose meta.json first), and nothing of the failed attempt is left."""
    out = tmp_path / "tokens"
    before = prepare(small_corpus(tmp_path / "corpus"), tiny_checkpoint, out, progress=False)
    earlier = {name: (out / name).read_bytes() for name in ("train.bin", "val.bin", "meta.json")}
    original = token_files.write_ranges

    def full_at_val(path, *args, **kwargs):
        if Path(path).name == "val.bin":
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(path, *args, **kwargs)

    monkeypatch.setattr(token_files, "write_ranges", full_at_val)
    with pytest.raises(OSError, match="No space left on device"):
        prepare(small_corpus(tmp_path / "bigger", 5), tiny_checkpoint, out, progress=False)
    monkeypatch.undo()
    assert {name: (out / name).read_bytes() for name in earlier} == earlier
    again = load_tokens(out)
    assert np.array_equal(again.train, before.train) and np.array_equal(again.val, before.val)
    assert sorted(p.name for p in out.iterdir()) == [".prepare.lock", "meta.json", "train.bin", "val.bin"]


def test_minor_a_killed_prepares_ids_temporary_is_removed_by_the_next(tiny_checkpoint, tmp_path):
    """A prepare killed while tokenising leaves its corpus-sized ids file (`.ids.XXXX.tmp` before this change,
    now inside `.prepare.partial/`); the next prepare into the folder removes either."""
    out = tmp_path / "tokens"
    out.mkdir()
    (out / ".ids.k1ll3d.tmp").write_bytes(b"\0" * 4096)  # what `kill -9` during the tokenising left
    (out / ".prepare.partial").mkdir()
    (out / ".prepare.partial" / "ids").write_bytes(b"\0" * 4096)
    prepare(small_corpus(tmp_path / "corpus"), tiny_checkpoint, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [".prepare.lock", "meta.json", "train.bin", "val.bin"]


def test_defect_4_train_refuses_token_files_of_another_tokenizer(tokens, tmp_path, capsys):
    """Token files made with the tests' tokenizer, a new model with another vocabulary of the same size: its
    ids would be other words. One line, exit 2, naming both tokenizers' hashes; nothing trained."""
    from bpe_files import SAMPLE, write_vocab

    other = tmp_path / "other"
    other.mkdir()
    assert write_vocab(other, 43, text=SAMPLE.upper()) == 300  # as many ids, other merges
    out = tmp_path / "run"
    code = main(["train", str(tokens), "-o", str(out), "--tokenizer", str(other), "--n-layer", "1", "--n-head", "1",
                 "--n-embd", "16", "--n-ctx", "16", "--steps", "2", "--batch-size", "2", "--eval-windows", "1",
                 "--sample-tokens", "0", "--warmup", "1", "--quiet"])
    err = one_line_error(capsys, code)
    assert "another tokenizer" in err and "prepare --tokenizer" in err
    assert not (out / "model.safetensors").exists()


def test_the_same_tokenizer_copied_into_a_model_folder_is_accepted(tokens, tiny_checkpoint, tmp_path):
    """The check compares the tokenizer's files, so a model folder's copy of them is the same tokenizer."""
    import shutil

    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tiny_checkpoint / name, copy / name)
    token_files.check_tokenizer(load_tokens(tokens), copy)


# ---- reading a corpus: odd files named, token folders never read as text ------------------------------------

def test_minor_an_empty_path_is_no_corpus(tmp_path, monkeypatch, capsys, tiny_checkpoint):
    """`prepare ""` used to tokenise the working directory."""
    small_corpus(tmp_path / "here")
    monkeypatch.chdir(tmp_path / "here")
    code = main(["prepare", "", "-o", str(tmp_path / "out"), "--tokenizer", str(tiny_checkpoint), "--quiet"])
    assert "empty" in one_line_error(capsys, code)
    assert not (tmp_path / "out").exists()


def test_minor_a_fifo_corpus_is_named_a_fifo_not_missing(tmp_path, capsys, tiny_checkpoint):
    os.mkfifo(tmp_path / "corpus.txt")
    code = main(["prepare", str(tmp_path / "corpus.txt"), "-o", str(tmp_path / "out"), "--tokenizer",
                 str(tiny_checkpoint), "--quiet"])
    err = one_line_error(capsys, code)
    assert "FIFO" in err and "does not exist" not in err


def test_minor_pattern_star_never_reads_an_earlier_token_folder(tmp_path, tiny_checkpoint, capsys):
    """`--pattern '*'` over a corpus holding an earlier prepare's output read its meta.json as text; it is left
    out, with a note."""
    corpus = small_corpus(tmp_path / "corpus")
    prepare(corpus, tiny_checkpoint, corpus / "tokens", progress=False)
    capsys.readouterr()
    assert main(["prepare", str(corpus), "-o", str(tmp_path / "out"), "--tokenizer", str(tiny_checkpoint),
                 "--pattern", "*"]) == 0
    files = [Path(name).name for name, *_ in json.loads((tmp_path / "out" / "meta.json").read_text())["files"]]
    assert files == ["part0.txt", "part1.txt", "part2.txt"]
    assert "token files of an earlier `prepare`" in capsys.readouterr().err


def test_minor_a_file_with_an_invalid_utf8_byte_is_left_out_with_a_note(tmp_path, tiny_checkpoint, capsys):
    corpus = small_corpus(tmp_path / "corpus")
    (corpus / "broken.txt").write_bytes(TEXT.encode() + b"\xff" + TEXT.encode())
    assert main(["prepare", str(corpus), "-o", str(tmp_path / "out"), "--tokenizer", str(tiny_checkpoint)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert len(notes) == 1 and "broken.txt" in notes[0] and "not UTF-8" in notes[0]
    files = [Path(name).name for name, *_ in json.loads((tmp_path / "out" / "meta.json").read_text())["files"]]
    assert "broken.txt" not in files
