"""bench/attacks.py (issue 27's attack classes as a script) runs: one cheap class, --quick, every attack handled,
and the summary it prints is the one it writes as JSON."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from launch import child_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_quick_paths_attacks_are_all_handled(tmp_path):
    summary = tmp_path / "summary.json"
    env = child_env()
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "attacks.py"), "--only", "paths", "--quick",
                           "--json", str(summary)], capture_output=True, text=True, env=env, timeout=400,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(summary.read_text())
    row = result["classes"]["paths"]
    assert list(result["classes"]) == ["paths"] and row["tried"] >= 5, result
    assert row["left"] == [] and row["handled"] == row["tried"] == result["handled"], row["left"]
    printed = re.search(r"^\| paths \| (\d+) \| (\d+) \| (\d+) \|$", done.stdout, re.MULTILINE)
    assert printed is not None and [int(n) for n in printed.groups()] == [row["tried"], row["handled"], 0], done.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # written atomically: no temporary left
