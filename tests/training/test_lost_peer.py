"""A torchrun rank lost mid-run (SIGKILL, as the kernel's out-of-memory killer sends it): the survivor ends with one
line naming the lost rank and what to do, and no traceback of ours. torchrun's agent then prints its own summary
(the failed ranks and their exit codes), which is torchrun's, not ours."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from launch import child_env, torchrun, worker_pid, worker_stderr

from minigpt_geom.training.distributed import Processes, group_error
from minigpt_geom.training.peers import alive, lost_ranks

LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds workers through Linux's /proc")


def test_a_process_that_ended_is_not_alive_even_before_its_parent_collects_it():
    child = subprocess.Popen(["sleep", "0"])
    while Path(f"/proc/{child.pid}").is_dir() and alive(child.pid):  # a zombie until wait(): not alive
        pass
    assert not alive(child.pid) and alive(os.getpid())
    processes = Processes(0, 3, torch.device("cpu"), local_peers=((1, os.getpid()), (2, child.pid)))
    assert lost_ranks(processes.local_peers) == [(2, child.pid)]
    assert str(group_error(processes, "a sum")) == (f"rank 2 (process {child.pid}) ended during a sum; rank 0 cannot "
                                                    f"go on without it")
    child.wait()
    assert not alive(child.pid)


def started_run(command: str, tokens: Path, tokenizer: Path, corpus: Path, out: Path) -> tuple[list[str], str]:
    """(argv, the line of rank 0's output after which the run is under way) of a run far longer than the test."""
    if command == "train":
        return (["train", str(tokens), "-o", str(out), "--tokenizer", str(tokenizer), "--n-layer", "2", "--n-head",
                 "2", "--n-embd", "32", "--n-ctx", "64", "--steps", "100000", "--eval-interval", "2", "--batch-size",
                 "4", "--context", "16", "--warmup", "1", "--eval-windows", "2", "--sample-tokens", "0", "--quiet"],
                "step 4: validation loss")  # the checkpoint of step 2 is saved by then
    text = "".join(path.read_text(encoding="utf-8") for path in sorted(corpus.iterdir()))
    files = out.parent / "corpus"
    files.mkdir()
    for i in range(4):  # about 2 MB: a minute of drift for two processes, which the kill cuts short
        (files / f"{i}.txt").write_text(text * 2, encoding="utf-8")
    return ["drift", str(files), "--weights", str(tokenizer), "--no-plot", "--quiet", "-o", str(out)], "weights: "


@pytest.mark.slow
@pytest.mark.subprocess
@LINUX_PROC
@pytest.mark.parametrize("command", ["train", "drift"])
def test_defect_16_a_rank_killed_mid_run_is_one_line_of_the_survivor_naming_it(command, tokens, tiny_checkpoint,
                                                                                corpus, tmp_path):
    argv, under_way = started_run(command, tokens, tiny_checkpoint, corpus, tmp_path / "out")
    logs = tmp_path / "logs"
    launcher = subprocess.Popen(torchrun(*argv, log_dir=logs), env=child_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        for line in launcher.stdout:  # rank 0's output, line by line (torchrun starts Python unbuffered)
            if line.startswith(under_way):
                break
        lost = worker_pid(launcher.pid, 1)
        os.kill(lost, signal.SIGKILL)
        _, agent = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode != 0
    survivor = worker_stderr(logs, 0)
    advice = (rf"{re.escape(str(tmp_path / 'out'))} keeps the checkpoint of step \d+; continue with: "
              rf"minigpt-geom train .* --resume"
              if command == "train" else "run the command again")
    assert re.fullmatch(rf"minigpt-geom {command}: error: rank 1 \(process {lost}\) ended( during [a-z ]+)?; "
                        rf"rank 0 cannot go on without it; {advice}\n", survivor), survivor
    assert "Traceback" not in survivor
    assert f"(pid: {lost})" in agent  # torchrun's own summary names the lost worker too
