"""`torchrun --nproc_per_node 2 -m minigpt_geom drift …` (gloo, CPU) gives the single process's statistics."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bpe_files import SAMPLE

from minigpt_geom.cli import main

ROOT = Path(__file__).resolve().parents[2]


def read_numbers(path: Path) -> list[list[float]]:
    with path.open(newline="") as f:
        return [[float(value) for value in row.values()] for row in csv.DictReader(f)]


@pytest.mark.subprocess
def test_two_processes_give_the_single_process_drift(tiny_checkpoint, tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "more").mkdir(parents=True)
    for i, text in enumerate([SAMPLE, SAMPLE[::-1], SAMPLE.upper()]):  # three files: shared out unevenly
        (corpus / ("more" if i == 2 else "") / f"{i}.txt").write_text(text * 2, encoding="utf-8")
    args = ["drift", str(corpus), "--weights", str(tiny_checkpoint), "--context", "32", "--batch-size", "3",
            "--no-plot", "--quiet"]
    assert main([*args, "-o", str(tmp_path / "one")]) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                             "-m", "minigpt_geom", *args, "-o", str(tmp_path / "two")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("drift.csv", "drift_by_position.csv"):
        one, two = read_numbers(tmp_path / "one" / name), read_numbers(tmp_path / "two" / name)
        assert len(one) == len(two) > 0
        worst = max(abs(a - b) for row_one, row_two in zip(one, two) for a, b in zip(row_one, row_two))
        assert worst <= 1e-6, (name, worst)
    positions = read_numbers(tmp_path / "one" / "drift.csv")[0][-1]
    assert positions > 100  # the statistics cover the whole corpus, not one process's share
