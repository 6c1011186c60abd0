"""A training run that survives kills, bad options, damaged state and mismatched processes (issue 19): each case
as small as it can be, on the tiny model of tiny_training.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock
import torch
from safetensors.torch import load_file, save_file

from minigpt_geom import GPT2
from minigpt_geom.cli import main
from minigpt_geom.text.token_files import load_tokens
from minigpt_geom.io.checkpoint_folder import write_checkpoint
from minigpt_geom.training.loop import TrainingStopped, TrainSettings, read_log, train
from launch import free_port, rank_env
from tiny_training import FAST, run, tiny_model

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def train_argv(tokens, tokenizer, out, *extra) -> list[str]:
    """A CLI run of the tiny default-free model: 4 steps, a checkpoint every 2."""
    return ["train", str(tokens), "-o", str(out), "--tokenizer", str(tokenizer), "--n-layer", "2", "--n-head", "2",
            "--n-embd", "32", "--n-ctx", "64", "--steps", "4", "--eval-interval", "2", "--batch-size", "4",
            "--context", "16", "--warmup", "1", "--eval-windows", "2", "--sample-tokens", "0", "--quiet",
            *extra]


@pytest.fixture(scope="module")
def finished_run(tokens, tiny_checkpoint, tmp_path_factory) -> Path:
    """A 4-step run of the CLI with non-default settings (batch 4, lr 2e-3)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(train_argv(tokens, tiny_checkpoint, out, "--lr", "2e-3")) == 0
    return out


def one_line_error(capsys) -> str:
    """The stderr of a command that failed: exactly one line."""
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


# ---- checkpoints as one unit --------------------------------------------------------------------------

KILL_AS_WEIGHTS_LAND = """
import os, signal, sys
import minigpt_geom.io.model_files as model_files
from tiny_training import run, tiny_model

original, landed = model_files.save_file, []
def save_then_die(tensors, path, metadata=None):
    original(tensors, path, metadata=metadata)
    landed.append(path)
    if sum(p.endswith("model.safetensors") for p in landed) == 2:  # the second checkpoint's weights are down
        os.kill(os.getpid(), signal.SIGKILL)
model_files.save_file = save_then_die
run(tiny_model(), sys.argv[1], sys.argv[2], sys.argv[3], steps=6, eval_interval=2, micro_batch=4)
"""


@pytest.mark.subprocess
def test_killed_as_the_weights_land_the_run_resumes_to_the_uninterrupted_weights(tokens, tiny_checkpoint,
                                                                                   tmp_path):
    settings = dict(steps=6, eval_interval=2, micro_batch=4)
    whole = tiny_model()
    run(whole, tokens, tiny_checkpoint, tmp_path / "whole", **settings)

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", KILL_AS_WEIGHTS_LAND, str(tokens), str(tiny_checkpoint), str(out)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert os.readlink(out / "checkpoint") == "step-000002"  # the complete checkpoint is still the current one
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == 2

    resumed = GPT2.from_pretrained(out)
    train(resumed, load_tokens(tokens), tiny_checkpoint, out, TrainSettings(**{**FAST, **settings}), resume=True,
          progress=False)
    for (name, a), b in zip(whole.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and not p.is_symlink()) == ["step-000006"]
    assert [row.step for row in read_log(out / "log.csv")] == list(range(7))


@pytest.mark.subprocess
def test_ctrl_c_says_which_checkpoint_was_kept_and_how_to_resume(tokens, tiny_checkpoint, tmp_path, capsys):
    import shlex
    import time

    out = tmp_path / "run"
    argv = train_argv(tokens, tiny_checkpoint, out, "--steps", "100000", "--eval-interval", "1", "--pattern", "*.txt")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "minigpt_geom", *argv], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "checkpoint").is_symlink() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)  # Ctrl-C
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 130, err
    [line] = err.splitlines()
    kept = int(os.readlink(out / "checkpoint").removeprefix("step-"))
    prefix = f"minigpt-geom train: interrupted: {out} keeps the checkpoint of step {kept}; continue with: minigpt-geom "
    assert line.startswith(prefix), line
    resume = shlex.split(line.removeprefix(prefix))
    assert resume == ["train", str(tokens), "--tokenizer", str(tiny_checkpoint), "-o", str(out), "--resume"]
    assert main([*resume, "--steps", str(kept + 1), "--quiet"]) == 0  # it continues, one step more
    assert [row.step for row in read_log(out / "log.csv")][-1] == kept + 1


def test_a_signal_during_a_checkpoint_waits_until_it_is_complete(tmp_path):
    def write(unit: Path) -> None:
        (unit / "config.json").write_text("{}")
        os.kill(os.getpid(), signal.SIGINT)  # arrives between the files
        (unit / "model.safetensors").write_bytes(b"weights")

    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path, "model", write)
    assert (tmp_path / "model.safetensors").read_bytes() == b"weights"  # the link leads to the finished unit
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_failed_checkpoint_leaves_the_previous_one(tmp_path):
    write_checkpoint(tmp_path, "model", lambda unit: (unit / "model.safetensors").write_bytes(b"old"))

    def fail(unit: Path) -> None:
        (unit / "model.safetensors").write_bytes(b"new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left on device"):
        write_checkpoint(tmp_path, "model", fail)
    assert (tmp_path / "model.safetensors").read_bytes() == b"old"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---- a run owns its folder --------------------------------------------------------------------------------


def test_a_second_process_on_the_same_folder_refuses(tokens, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with FileLock(out / "run.lock"):  # as the first process holds it
        assert main(train_argv(tokens, tiny_checkpoint, out)) == 2
    assert "another process is running in" in one_line_error(capsys)
    assert not (out / "checkpoint").exists()


def test_train_and_init_refuse_a_folder_that_holds_a_run_unless_told(finished_run, tokens, tiny_checkpoint,
                                                                      capsys):
    before = os.readlink(finished_run / "checkpoint")
    assert main(train_argv(tokens, tiny_checkpoint, finished_run)) == 2
    assert "already holds a run" in one_line_error(capsys)
    assert main(["init", "-o", str(finished_run), "--tokenizer", str(tiny_checkpoint), "--n-layer", "1"]) == 2
    assert "already holds a run" in one_line_error(capsys)
    assert os.readlink(finished_run / "checkpoint") == before


def test_a_run_folder_inside_the_corpus_is_refused(corpus, tiny_checkpoint, capsys):
    out = corpus / "run"
    assert main(train_argv(corpus, tiny_checkpoint, out)) == 2
    assert "is inside the corpus" in one_line_error(capsys) and not out.exists()


def test_init_overwrite_replaces_the_checkpoint(tiny_checkpoint, tmp_path, capsys):
    argv = ["init", "-o", str(tmp_path / "m"), "--tokenizer", str(tiny_checkpoint), "--n-head", "2", "--n-embd", "32"]
    assert main(argv + ["--n-layer", "1"]) == 0
    assert main(argv + ["--n-layer", "2"]) == 2
    assert main(argv + ["--n-layer", "2", "--overwrite"]) == 0
    assert GPT2.from_pretrained(tmp_path / "m").config.n_layer == 2


def test_resume_keeps_the_saved_settings_and_refuses_to_change_one(finished_run, tokens, tiny_checkpoint,
                                                                     tmp_path, capsys):
    assert main(["train", str(tokens), "-o", str(finished_run), "--resume", "--lr", "0.1"]) == 2
    err = one_line_error(capsys)
    assert "--lr" in err and "0.002" in err

    out = tmp_path / "copy"  # the module's run stays as it was for the other tests
    shutil.copytree(finished_run, out, symlinks=True)
    assert main(["train", str(tokens), "-o", str(out), "--resume", "--steps", "6", "--quiet"]) == 0
    saved = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert saved["step"] == 6 and saved["settings"]["batch_size"] == 4 and saved["settings"]["learning_rate"] == 2e-3


def test_the_library_resumes_only_with_the_saved_settings(finished_run, tokens, tmp_path):
    from minigpt_geom.training.settings import SettingError

    out = tmp_path / "copy"
    shutil.copytree(finished_run, out, symlinks=True)
    saved = json.loads((out / "checkpoint" / "trainer_state.json").read_text())["settings"]
    changed = TrainSettings(**{**saved, "betas": tuple(saved["betas"]), "weight_decay": 0.5, "steps": 6})
    with pytest.raises(SettingError, match="weight_decay was 0.1 in the saved run, so it cannot be 0.5"):
        train(GPT2.from_pretrained(out), load_tokens(tokens), out, out, changed, resume=True, progress=False)


@pytest.mark.parametrize("damage, message", [
    ("n_layer", "n_layer = 1000"),
    ("missing moment", "does not fit the model"),
    ("nan moment", "NaN or infinite"),
    ("short rng", "rng.batches is U8 [7]"),
    ("step", "must hold a step"),
])
def test_a_damaged_run_is_refused_before_anything_is_built(finished_run, tokens, tiny_checkpoint, tmp_path,
                                                           capsys, damage, message):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out, symlinks=True)
    unit = out / "checkpoint"
    if damage == "n_layer":  # a crafted config.json asking for a model of 1000 layers
        config = json.loads((unit / "config.json").read_text())
        (unit / "config.json").write_text(json.dumps({**config, "n_layer": 1000}))
    elif damage == "step":
        (unit / "trainer_state.json").write_text(json.dumps({"step": "4", "settings": {}}))
    else:
        tensors = load_file(unit / "optimizer.safetensors")
        if damage == "missing moment":
            del tensors["exp_avg.wte.weight"]
        elif damage == "nan moment":
            tensors["exp_avg_sq.h.0.ln_1.bias"][0] = float("nan")
        else:
            tensors["rng.batches"] = tensors["rng.batches"][:7].clone()
        save_file(tensors, unit / "optimizer.safetensors")
    assert main(["train", str(tokens), "-o", str(out), "--resume", "--steps", "6", "--quiet"]) == 2
    assert message in one_line_error(capsys)
    assert json.loads((unit / "trainer_state.json").read_text()).get("step") in (4, "4")


# ---- finite or stop ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("option, value", [("--lr", "nan"), ("--lr", "inf"), ("--weight-decay", "nan"),
                                           ("--grad-clip", "inf"), ("--min-lr", "-0.001"), ("--min-lr", "nan")])
def test_non_finite_and_negative_options_are_refused(option, value, tokens, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(tokens, tiny_checkpoint, out, option, value)) == 2
    assert one_line_error(capsys).startswith(f"minigpt-geom train: error: {option} must be a finite number ≥ 0")
    assert not out.exists()


def test_a_non_finite_loss_stops_the_run_keeping_the_last_finite_checkpoint(tokens, tiny_checkpoint, tmp_path):
    model = tiny_model()

    def diverge(step: int) -> None:
        if step == 3:
            with torch.no_grad():
                model.h[0].mlp.c_fc.weight[0, 0] = float("inf")

    settings = TrainSettings(**{**FAST, "steps": 6, "eval_interval": 2})
    with pytest.raises(TrainingStopped, match=r"step 3: the loss \(nan\).*keeps its last checkpoint, step-000002"):
        train(model, load_tokens(tokens), tiny_checkpoint, tmp_path, settings, progress=False, before_step=diverge)
    saved = GPT2.from_pretrained(tmp_path)  # the loader refuses NaN: this is the finite step-2 model
    assert json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())["step"] == 2
    assert all(torch.isfinite(p).all() for p in saved.parameters())


def test_defect_6_a_non_finite_validation_loss_stops_before_saving(tokens, tiny_checkpoint, tmp_path):
    model = tiny_model()

    def nan_when_evaluating(module, inputs, output):  # finite training steps, NaN at every evaluation from step 3 on
        return None if torch.is_grad_enabled() else (output[0] * float("nan"), output[1])

    def break_evaluations(step: int) -> None:
        if step == 3:
            model.ln_f.register_forward_hook(nan_when_evaluating)

    settings = TrainSettings(**{**FAST, "steps": 6, "eval_interval": 2, "sample_tokens": 4})
    with pytest.raises(TrainingStopped, match=r"step 4: the validation loss \(nan\) is not finite; the run stopped "
                                              r"before saving \(.* keeps its last checkpoint, step-000002\)"):
        train(model, load_tokens(tokens), tiny_checkpoint, tmp_path, settings, progress=False,
              before_step=break_evaluations)
    assert json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())["step"] == 2
    assert [row.step for row in read_log(tmp_path / "log.csv")] == [0, 1, 2, 3]  # no row for the NaN evaluation


def test_defect_6_a_learning_rate_that_diverges_saves_no_checkpoint_that_gives_nan(tokens, tiny_checkpoint,
                                                                                   tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(tokens, tiny_checkpoint, out, "--lr", "1e20", "--grad-clip", "0", "--eval-interval",
                           "1", "--sample-tokens", "4")) == 2
    err = one_line_error(capsys)
    assert "step 1: the validation loss (nan) is not finite; the run stopped before saving (no checkpoint" in err
    assert not (out / "checkpoint").exists() and not (out / "model.safetensors").exists()


# ---- many processes -----------------------------------------------------------------------------------


@pytest.mark.subprocess
def test_ranks_started_with_different_steps_refuse_naming_the_rank_and_setting(tokens, tiny_checkpoint, tmp_path):
    port = free_port()
    processes = []
    for rank, steps in ((0, "4"), (1, "5")):
        argv = train_argv(tokens, tiny_checkpoint, tmp_path / "run", "--steps", steps)
        processes.append(subprocess.Popen([sys.executable, "-m", "minigpt_geom", *argv], env=rank_env(rank, 2, port),
                                          stderr=subprocess.PIPE, text=True))
    errors = [p.communicate(timeout=300)[1] for p in processes]
    for process, err in zip(processes, errors):
        assert process.returncode == 2, err
        assert len(err.strip().splitlines()) == 1, err
        assert "the ranks were started with different --steps (4 on rank 0, 5 on rank 1)" in err
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_a_collective_that_times_out_is_one_line_naming_the_rank():
    from minigpt_geom.training.distributed import COLLECTIVE_TIMEOUT, Processes, ProcessGroupError, collective

    def timed_out():  # what gloo raises when a peer never arrives
        raise RuntimeError("[gloo/transport/tcp/pair.cc:534] Timed out waiting 300000ms for recv operation\nmore")

    assert COLLECTIVE_TIMEOUT.total_seconds() == 300  # minutes, not gloo's default half hour
    with pytest.raises(ProcessGroupError, match=r"^rank 1: the other processes did not join a sum within 5 minutes"
                                                r", or one of them stopped \(\[gloo.*recv operation\)$"):
        collective(Processes(1, 2, torch.device("cpu")), "a sum", timed_out)


# ---- the model and its norm -------------------------------------------------------------------------------


@pytest.mark.parametrize("norm, named", [('{"lnf": "none"}', "'lnf'"), ('{"h.7.ln_1": "none"}', "'h.7.ln_1'")])
def test_a_norm_mapping_naming_no_site_is_refused(norm, named, tokens, tiny_checkpoint, tmp_path, capsys):
    assert main(train_argv(tokens, tiny_checkpoint, tmp_path / "run", "--norm", norm)) == 2
    assert f"the norm mapping names {named}, which is no site of this 2-layer model" in one_line_error(capsys)
    assert main(["init", "-o", str(tmp_path / "m"), "--tokenizer", str(tiny_checkpoint), "--n-layer", "2",
                 "--norm", norm]) == 2
    assert named in one_line_error(capsys)
    assert not (tmp_path / "run").exists() and not (tmp_path / "m").exists()


def test_sizes_that_cannot_fit_are_refused_before_allocating(tokens, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["init", "-o", str(out), "--tokenizer", str(tiny_checkpoint), "--n-embd", "65536", "--n-head", "1"]) == 2
    assert "a model of" in (err := one_line_error(capsys)) and "GiB on cpu, more than the" in err
    assert main(train_argv(tokens, tiny_checkpoint, out, "--batch-size", "100000000")) == 2
    assert "a training step" in (err := one_line_error(capsys)) and "GiB on cpu, more than the" in err
    assert not out.exists()


# ---- training says what it does ---------------------------------------------------------------------------


def test_a_warm_up_longer_than_the_run_is_a_warning_and_the_log_is_readable(tokens, tiny_checkpoint, tmp_path,
                                                                             capsys):
    out = tmp_path / "run"
    assert main(train_argv(tokens, tiny_checkpoint, out, "--warmup", "10", "--lr", "6e-5", "--log-interval", "3")) == 0
    err = capsys.readouterr().err
    assert "warning: the warm-up (10 steps) does not end before the run does (step 4)" in err
    lines = (out / "log.csv").read_text().splitlines()
    assert lines[0] == "step,train_loss,val_loss,learning_rate,tokens_per_second,grad_norm,residual_norm,dyt_saturation"
    steps = [int(line.split(",")[0]) for line in lines[1:]]
    assert steps == [0, 2, 3, 4]  # every third step, and every evaluation (0, 2, 4)
    assert lines[1].split(",")[3] == "6e-06"  # 6e-5 · 1/10, not 5.999999999999999e-06
    assert all(float(line.split(",")[5]) > 0 for line in lines[1:-1])  # the gradient norm of each step
