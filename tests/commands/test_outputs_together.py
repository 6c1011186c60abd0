"""A command's outputs moved in together or not at all, paths that name nothing refused, and models of another
vocabulary never fed the same ids in silence (issue 27). Each test names the issue's defect it holds."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from minigpt_geom import OutputError
from minigpt_geom.cli import main
from minigpt_geom.io import files

TEXT = "To kill two birds with one stone"


def one_line_error(capsys, code: int, command: str) -> str:
    """The stderr of a command that failed with exit code 2: exactly one line naming the command."""
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(f"minigpt-geom {command}: "), (code,
                                                                                                            err)
    return err


# ---- outputs together --------------------------------------------------------------------------------------

def test_defect_13_an_output_that_cannot_be_replaced_leaves_the_earlier_ones_as_they_were(tiny_checkpoint, tmp_path,
                                                                                         capsys):
    """lens writes lens.csv then lens_grid.png: where lens_grid.png is a folder, lens.csv used to be replaced
    already when the figure failed. Every target is checked before the first is moved."""
    out = tmp_path / "lens"
    out.mkdir()
    (out / "lens.csv").write_text("the previous run")
    (out / "lens_grid.png").mkdir()
    code = main(["lens", TEXT, "--weights", str(tiny_checkpoint), "-o", str(out), "--quiet"])
    assert "lens_grid.png" in one_line_error(capsys, code, "lens")
    assert (out / "lens.csv").read_text() == "the previous run"
    assert sorted(p.name for p in out.iterdir()) == ["lens.csv", "lens_grid.png"]  # no stage, no temporary


def test_defect_13_a_move_that_fails_half_way_puts_back_what_it_replaced(tmp_path, monkeypatch):
    """The second rename fails (after every check passed): the first target gets its previous file back, the new
    third one never appears."""
    from minigpt_geom.io.files import move_together

    out, stage = tmp_path / "out", tmp_path / "stage"
    out.mkdir()
    stage.mkdir()
    for name in ("a.csv", "b.csv", "c.csv"):
        (stage / name).write_text(f"new {name}")
    (out / "a.csv").write_text("old a")
    (out / "b.csv").write_text("old b")
    replace, calls = os.replace, []

    def second_fails(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        replace(source, target)

    monkeypatch.setattr(files.os, "replace", second_fails)
    with pytest.raises(OutputError, match="Input/output error"):
        move_together([(stage / name, out / name) for name in ("a.csv", "b.csv", "c.csv")], stage)
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a.csv": "old a", "b.csv": "old b"}


# ---- paths that name nothing, -o that is no folder --------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["report", TEXT, "-o", ""],
    ["lens", TEXT, "-o", ""],
    ["qk", "--vocab-from", ""],
    ["drift", ""],
    ["prepare", "", "-o", "tokens"],
    ["train", "", "-o", "run"],
    ["tokenizer", "", "--vocab-size", "300", "-o", "bpe"],
    ["init", "-o", ""],
    ["lens", TEXT, "--weights", ""],
])
def test_minor_an_empty_path_is_refused_not_taken_for_the_working_directory(argv, tmp_path, monkeypatch, capsys):
    """`report -o ""` wrote report.html into the working directory, `--vocab-from ""` read all of it."""
    monkeypatch.chdir(tmp_path)
    err = one_line_error(capsys, main(argv), argv[0])
    assert "empty path" in err
    assert os.listdir(tmp_path) == []


def test_minor_train_onto_a_file_is_one_line_before_any_work(tmp_path, capsys):
    """`train -o FILE` gave "[Errno 17] File exists" after tokenising the corpus (the corpus here does not even
    exist: the output is checked first)."""
    (tmp_path / "notes.txt").write_text("mine")
    code = main(["train", str(tmp_path / "no corpus"), "-o", str(tmp_path / "notes.txt"), "--quiet"])
    err = one_line_error(capsys, code, "train")
    assert "is a file" in err and "Errno" not in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("command", ["report", "lens", "train"])
def test_an_output_that_is_a_loop_of_links_is_one_line(command, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """`-o loop` where loop -> loop: report and train ended in pathlib's RuntimeError("Symlink loop") (bench/attacks.py
    found it); now the writer or the folder's lock refuses it, naming it, and the link stays."""
    monkeypatch.chdir(tmp_path)
    os.symlink("loop", "loop")
    argv = {"report": ["report", TEXT, "--weights", str(tiny_checkpoint)],
            "lens": ["lens", TEXT, "--weights", str(tiny_checkpoint), "--no-plot"],
            "train": ["train", str(tiny_checkpoint), "--pattern", "*.json", "--tokenizer", str(tiny_checkpoint)]}
    err = one_line_error(capsys, main([*argv[command], "-o", "loop", "--quiet"]), command)
    assert "loop" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == ["loop"] and os.readlink("loop") == "loop"


def test_a_tokenizer_that_cannot_be_written_is_an_output_error(tmp_path):
    """tokenizers reports a failed save (a full disk: "No space left on device (os error 28)") as a bare Exception,
    which reached the user as a traceback; here vocab.json is a folder, the same failure."""
    pytest.importorskip("tokenizers", reason="needs tokenizers (pip install -e .[fast])")
    from minigpt_geom.text.bpe_training import byte_level_bpe, write_bpe

    (tmp_path / "vocab.json").mkdir()
    with pytest.raises(OutputError, match=f"cannot write the tokenizer into {tmp_path}: .*"):
        write_bpe(byte_level_bpe(), tmp_path)


# ---- compare: one vocabulary ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_defect_4_compare_refuses_a_model_of_another_vocabulary_unless_told(tiny_checkpoint, tmp_path, capsys):
    """A model of the same size whose tokenizer maps ids to other tokens: refused in one line; with
    --mixed-vocabularies it is compared on the first model's ids."""
    from bpe_files import SAMPLE, write_vocab

    other = Path(shutil.copytree(tiny_checkpoint, tmp_path / "other"))
    assert write_vocab(other, 43, text=SAMPLE.upper()) == 300  # as many ids, other tokens
    argv = ["compare", TEXT, "--weights", str(tiny_checkpoint), "--against", str(other), "--no-plot", "--quiet",
            "-o", str(tmp_path / "compare")]
    err = one_line_error(capsys, main(argv), "compare")
    assert "another vocabulary" in err and "--mixed-vocabularies" in err
    assert not (tmp_path / "compare").exists()
    assert main([*argv, "--mixed-vocabularies"]) == 0
