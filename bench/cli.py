"""How fast the command line answers without working: `--help`, `--version`, a command's help, an argument error.

    python bench/cli.py [--repeats N]

Each is timed in a fresh process, as a user runs it (`python -m minigpt_geom …`, the console script's code),
median of N; the goal is under 0.5 s, which holds because none of them imports torch (the import of
`import torch` alone is printed beside them for scale). The train command's help builds its options from
the training settings in train.py, which imports torch: its time is printed too."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "minigpt-geom --help": ["--help"],
    "minigpt-geom --version": ["--version"],
    "minigpt-geom lens --help": ["lens", "--help"],
    "minigpt-geom lens --dpi 0 (an argument error)": ["lens", "--dpi", "0"],
    "minigpt-geom train --help": ["train", "--help"],
}


def fresh_process_seconds(code: list[str], repeats: int) -> float:
    """Median wall time of `python CODE…` in a new process, over `repeats` runs after one untimed."""
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, *code], capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    """Print one line per case: median seconds in a fresh process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for name, code in (("python -c pass", "pass"), ("python -c 'import torch'", "import torch")):
        print(f"{name:48s} {fresh_process_seconds(['-c', code], args.repeats):6.3f} s")
    for name, argv in CASES.items():
        seconds = fresh_process_seconds(["-m", "minigpt_geom", *argv], args.repeats)
        print(f"{name:48s} {seconds:6.3f} s{'' if seconds < 0.5 or 'train' in name else '  (goal: < 0.5 s)'}")


if __name__ == "__main__":
    main()
