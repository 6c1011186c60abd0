"""`torchrun --nproc_per_node 2 -m minigpt_geom drift …` (gloo, CPU) gives the single process's statistics, with
--max-windows too (a limit of the whole run), and ranks started with different options refuse."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from bpe_files import SAMPLE
from launch import child_env, free_port, rank_env, torchrun

from minigpt_geom.cli import main


def read_numbers(path: Path) -> list[list[float]]:
    with path.open(newline="") as f:
        return [[float(value) for value in row.values()] for row in csv.DictReader(f)]


def three_files(folder: Path) -> Path:
    """A corpus of three files in two folders, shared out unevenly between two processes."""
    corpus = folder / "corpus"
    (corpus / "more").mkdir(parents=True)
    for i, text in enumerate([SAMPLE, SAMPLE[::-1], SAMPLE.upper()]):
        (corpus / ("more" if i == 2 else "") / f"{i}.txt").write_text(text * 2, encoding="utf-8")
    return corpus


def assert_same_drift(one: Path, two: Path) -> None:
    """The two runs' CSVs hold the same numbers, to float64 sums of float32 terms."""
    for name in ("drift.csv", "drift_by_position.csv"):
        first, second = read_numbers(one / name), read_numbers(two / name)
        assert len(first) == len(second) > 0
        worst = max(abs(a - b) for row_one, row_two in zip(first, second) for a, b in zip(row_one, row_two))
        assert worst <= 1e-6, (name, worst)


@pytest.mark.subprocess
def test_two_processes_give_the_single_process_drift(tiny_checkpoint, tmp_path):
    args = ["drift", str(three_files(tmp_path)), "--weights", str(tiny_checkpoint), "--context", "32",
            "--batch-size", "3", "--no-plot", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "one")]) == 0
    result = subprocess.run(torchrun(*args, "-o", str(tmp_path / "two")), env=child_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_drift(tmp_path / "one", tmp_path / "two")
    positions = read_numbers(tmp_path / "one" / "drift.csv")[0][-1]
    assert positions > 100  # the statistics cover the whole corpus, not one process's share


@pytest.mark.subprocess
def test_defect_9_max_windows_is_a_limit_of_the_whole_run_not_of_each_process(tiny_checkpoint, tmp_path, capsys):
    args = ["drift", str(three_files(tmp_path)), "--weights", str(tiny_checkpoint), "--context", "32",
            "--batch-size", "2", "--max-windows", "7", "--no-plot", "--quiet"]  # 7: dealt 4 and 3, from two files
    assert main([*args, "-o", str(tmp_path / "one")]) == 0
    assert " in 7 windows" in capsys.readouterr().out
    result = subprocess.run(torchrun(*args, "-o", str(tmp_path / "two")), env=child_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert " in 7 windows" in result.stdout  # not 7 of each process's
    assert_same_drift(tmp_path / "one", tmp_path / "two")  # the same 7 windows: the first the corpus gives


@pytest.mark.subprocess
def test_defect_9_ranks_started_with_different_options_refuse_naming_the_option_and_values(tiny_checkpoint,
                                                                                            tmp_path):
    corpus, port = three_files(tmp_path), free_port()
    args = ["drift", str(corpus), "--weights", str(tiny_checkpoint), "--no-plot", "--quiet", "-o", str(tmp_path / "d")]
    ranks = [subprocess.Popen([sys.executable, "-m", "minigpt_geom", *args, *extra], env=rank_env(rank, 2, port),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank, extra in ((0, []), (1, ["--context", "8"]))]
    for rank in ranks:
        out, err = rank.communicate(timeout=300)
        assert rank.returncode == 2, err
        assert err.splitlines() == ["minigpt-geom drift: error: the ranks were started with different --context "
                                    "(None on rank 0, 8 on rank 1): launch every process with the same options"]
        assert out == ""
    assert not (tmp_path / "d").exists()
