"""A run folder owns only what it wrote, is written by one process at a time, and resumes only on its own data
(issue 27). Each test names the issue's defect it holds."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from minigpt_geom import GPT2
from minigpt_geom.cli import main
from minigpt_geom.errors import InputError
from minigpt_geom.text.token_files import load_tokens, prepare
from minigpt_geom.training import loop
from minigpt_geom.training.loop import TrainSettings, read_log, train
from minigpt_geom.training.settings import settings_from_saved
from tiny_training import FAST, STDLIB_FILES, tiny_model

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
pytestmark = pytest.mark.usefixtures("one_thread")
INIT = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--n-ctx", "64"]


def train_argv(corpus, tokenizer, out, *extra) -> list[str]:
    """A CLI run of a tiny new model: 4 steps, a checkpoint every 2."""
    return ["train", str(corpus), "-o", str(out), "--tokenizer", str(tokenizer), *INIT, "--steps", "4",
            "--eval-interval", "2", "--batch-size", "4", "--context", "16", "--warmup", "1", "--eval-windows", "2",
            "--sample-tokens", "0", "--quiet", *extra]


def one_line_error(capsys, code: int) -> str:
    """The stderr of a command that failed with exit code 2: exactly one line."""
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, (code, err)
    return err


def saved_step(out: Path) -> int:
    return json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"]


@pytest.fixture(scope="module")
def finished(tokens, tiny_checkpoint, tmp_path_factory) -> Path:
    """A 4-step CLI run on the tests' token files, to copy."""
    out = tmp_path_factory.mktemp("owned") / "run"
    assert main(train_argv(tokens, tiny_checkpoint, out)) == 0
    return out


def copy_of(run_folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_folder, tmp_path / "run", symlinks=True))


# ---- a run folder owns only what it wrote -----------------------------------------------------------------

def test_defect_2_init_leaves_the_users_folders_that_look_like_ours(tiny_checkpoint, tmp_path):
    """`mkdir -p proj/model; echo x > proj/model/thesis.txt; init -o proj` deleted proj/model; so did a second
    init --overwrite with `step-N`, `.model.tmp` and `model.N` folders of the user's."""
    proj = tmp_path / "proj"
    theirs = ["model", "model.3", "step-000002", ".model.tmp", ".step-000004.tmp"]
    for name in theirs:
        (proj / name).mkdir(parents=True)
        (proj / name / "thesis.txt").write_text("years of work")
    argv = ["init", "-o", str(proj), "--tokenizer", str(tiny_checkpoint), *INIT]
    assert main(argv) == 0
    assert main([*argv, "--overwrite", "--seed", "1"]) == 0
    for name in theirs:
        assert (proj / name / "thesis.txt").read_text() == "years of work", name
    assert os.readlink(proj / "checkpoint") not in theirs
    assert GPT2.from_pretrained(proj).config.n_layer == 1


def test_defect_2_a_file_of_the_users_where_a_model_file_goes_is_refused(tiny_checkpoint, tmp_path, capsys):
    """A config.json of the user's in -o was replaced by a link; now one line, and it stays."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "config.json").write_text("the user's own")
    code = main(["init", "-o", str(proj), "--tokenizer", str(tiny_checkpoint), *INIT, "--overwrite"])
    assert "was not written by minigpt-geom" in one_line_error(capsys, code)
    assert (proj / "config.json").read_text() == "the user's own" and not (proj / "checkpoint").exists()


@pytest.mark.slow
def test_defect_2_train_removes_only_its_own_old_checkpoints(tokens, tiny_checkpoint, tmp_path):
    """The run replaces step-000002 by step-000004 (its own), never the user's step-000003 nor model/."""
    out = tmp_path / "run"
    for name in ("step-000003", "model"):
        (out / name).mkdir(parents=True)
        (out / name / "notes.txt").write_text("mine")
    assert main(train_argv(tokens, tiny_checkpoint, out)) == 0
    assert (out / "step-000003" / "notes.txt").read_text() == (out / "model" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and not p.is_symlink()) == \
        ["model", "step-000003", "step-000004"]


# ---- one process at a time: the lock on the folder itself ---------------------------------------------------

@pytest.mark.slow
def test_defect_3_init_and_remove_ln_keep_out_of_a_folder_being_trained(finished, tokens, tiny_checkpoint,
                                                                       tmp_path, capsys):
    """While a training holds R's lock, `init --overwrite R` and `remove-ln … -o R --overwrite` (which locked only
    R/run) are refused in one line, and R's checkpoint is the training's still."""
    out = copy_of(finished, tmp_path)
    before = os.readlink(out / "checkpoint")
    with FileLock(out / "run.lock"):  # as the training holds it
        code = main(["init", "-o", str(out), "--tokenizer", str(tiny_checkpoint), *INIT, "--overwrite"])
        assert "another process is running in" in one_line_error(capsys, code)
        code = main(["remove-ln", str(tokens), "--weights", str(tiny_checkpoint), "-o", str(out), "--overwrite",
                     "--steps", "2", "--batch-size", "2", "--context", "16", "--eval-windows", "1",
                     "--sample-tokens", "0", "--quiet"])
        assert "another process is running in" in one_line_error(capsys, code)
    assert os.readlink(out / "checkpoint") == before and (out / before / "trainer_state.json").is_file()
    assert not (out / "run").exists()


# ---- provenance: --resume only on the saved data ----------------------------------------------------------------

@pytest.mark.slow
def test_defect_5_resume_refuses_another_corpus_or_split(finished, tokens, tiny_checkpoint, corpus, tmp_path,
                                                         capsys):
    """The saved run trained on `tokens`: resuming on another split of the same corpus, or on a corpus with one
    file changed, trained on other data without a word."""
    out = copy_of(finished, tmp_path)
    resplit = tmp_path / "resplit"
    prepare(corpus, tiny_checkpoint, resplit, val_fraction=0.2, progress=False)
    code = main(["train", str(resplit), "-o", str(out), "--resume", "--steps", "6", "--quiet"])
    err = one_line_error(capsys, code)
    assert "trained on other data" in err and "held-out fraction differs (0.1 then, 0.2 now)" in err

    changed = Path(shutil.copytree(corpus, tmp_path / "changed"))
    with (changed / STDLIB_FILES[0]).open("a") as f:
        f.write("\n# one more line\n")
    code = main(["train", str(changed), "-o", str(out), "--resume", "--steps", "6", "--quiet", "--pattern", "*",
                 "--data-cache", str(tmp_path / "cache")])
    err = one_line_error(capsys, code)
    assert "trained on other data" in err and "corpus files differ" in err
    assert saved_step(out) == 4


def test_the_saved_data_record_names_the_files_tokenizer_and_split(finished, tokens):
    data = json.loads((finished / "checkpoint" / "trainer_state.json").read_text())["data"]
    meta = json.loads((tokens / "meta.json").read_text())
    assert data == {key: meta.get(key) for key in ("files", "pattern", "tokenizer", "val_fraction", "split",
                                                    "split_seed")}
    assert [Path(name).name for name, *_ in data["files"]] == sorted(STDLIB_FILES)


# ---- --stop-at, a kill at the first link, modes, the log ----------------------------------------------------------

@pytest.mark.slow
def test_defect_10_a_plain_resume_after_stop_at_goes_on_to_the_end(tokens, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    assert main(train_argv(tokens, tiny_checkpoint, out, "--stop-at", "2")) == 0
    assert saved_step(out) == 2
    assert main(["train", str(tokens), "-o", str(out), "--resume", "--quiet"]) == 0
    assert saved_step(out) == 4 and [row.step for row in read_log(out / "log.csv")] == [0, 1, 2, 3, 4]


def test_minor_resume_removes_the_previous_checkpoint_a_kill_left(finished, tokens, tmp_path):
    """Killed after the last checkpoint's link switch, before its cleanup (bench/attacks.py: SIGKILL after the 7th
    replace_link), a finished run kept its previous checkpoint folder for ever: the resume trains nothing, so no
    checkpoint write removed it. The resume removes it now; a folder of the user's with such a name stays."""
    from minigpt_geom.io.owned import record

    out = copy_of(finished, tmp_path)
    shutil.copytree(out / "checkpoint", out / "step-000002")  # what the kill left: ours, in the manifest
    record(out, added=("step-000002",))
    (out / "step-000003").mkdir()
    (out / "step-000003" / "mine.txt").write_text("the user's")
    assert main(["train", str(tokens), "-o", str(out), "--resume", "--quiet"]) == 0
    assert not (out / "step-000002").exists() and (out / "step-000003" / "mine.txt").read_text() == "the user's"
    assert saved_step(out) == 4 and os.readlink(out / "checkpoint") == "step-000004"


KILL_AT_A_LINK = """
import os, signal, sys
import minigpt_geom.io.checkpoint_folder as checkpoint_folder
from tiny_training import run, tiny_model

original, made = checkpoint_folder.replace_link, []
def replace_then_die(link, target):
    original(link, target)
    made.append(link)
    if len(made) == int(sys.argv[4]):  # the first checkpoint's links: the Nth is in place
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint_folder.replace_link = replace_then_die
run(tiny_model(), sys.argv[1], sys.argv[2], sys.argv[3], steps=4, eval_interval=2, micro_batch=4)
"""


@pytest.mark.subprocess
@pytest.mark.parametrize("killed_after", [1, 5])
def test_defect_11_a_kill_during_the_first_link_switch_leaves_a_run_that_resumes_or_restarts(
        killed_after, tokens, tiny_checkpoint, tmp_path):
    """The first checkpoint makes five links (checkpoint and the four model files); a kill after the first (or
    the last) of them left a folder that neither resumed (no model.safetensors) nor restarted (already a run)."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", KILL_AT_A_LINK, str(tokens), str(tiny_checkpoint), str(out),
                             str(killed_after)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    settings = TrainSettings(**{**FAST, "steps": 4, "eval_interval": 2, "micro_batch": 4})
    try:
        train(tiny_model(), load_tokens(tokens), tiny_checkpoint, out, settings, progress=False)  # restart
    except InputError as error:
        assert "already holds a run" in str(error)
        train(GPT2.from_pretrained(out), load_tokens(tokens), tiny_checkpoint, out, settings, resume=True,
              progress=False)
    assert saved_step(out) == 4


@pytest.mark.slow
def test_defect_15_checkpoint_weights_honour_the_umask_like_config_json(tokens, tiny_checkpoint, tmp_path):
    previous = os.umask(0o022)
    try:
        assert main(["init", "-o", str(tmp_path / "init"), "--tokenizer", str(tiny_checkpoint), *INIT]) == 0
        assert main(train_argv(tokens, tiny_checkpoint, tmp_path / "run")) == 0
    finally:
        os.umask(previous)
    for folder in (tmp_path / "init", tmp_path / "run"):
        names = ["config.json", "model.safetensors"] + (["optimizer.safetensors"] if folder.name == "run" else [])
        modes = {name: stat.S_IMODE((folder / "checkpoint" / name).stat().st_mode) for name in names}
        assert modes == dict.fromkeys(names, 0o644), folder


def test_minor_a_kill_while_resume_rewrites_log_csv_keeps_its_rows(finished, tokens, tmp_path, monkeypatch):
    """--resume rewrites log.csv with the rows it keeps; killed half-way (here: interrupted at the second row),
    it used to leave the header and one row."""
    out = copy_of(finished, tmp_path)
    before = (out / "log.csv").read_text()
    cells, written = loop.log_cells, []

    def interrupted(row):
        written.append(row)
        if len(written) == 2:
            raise KeyboardInterrupt
        return cells(row)

    monkeypatch.setattr(loop, "log_cells", interrupted)
    with pytest.raises(KeyboardInterrupt):
        saved = json.loads((out / "checkpoint" / "trainer_state.json").read_text())["settings"]
        train(GPT2.from_pretrained(out), load_tokens(tokens), out, out, settings_from_saved(saved, {"steps": 6}),
              resume=True, progress=False)
    assert (out / "log.csv").read_text() == before
    assert [int(row["step"]) for row in csv.DictReader(before.splitlines())] == [0, 1, 2, 3, 4]
