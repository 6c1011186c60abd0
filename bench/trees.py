"""Before/after of a change on a loaded machine: the calls bench/forward.py and bench/trace.py time for
minigpt_geom (untraced, traced with summaries, full capture), on two trees side by side in one process.

    git archive BEFORE | tar -x -C /tmp/before;  git archive HEAD | tar -x -C /tmp/after
    python bench/trees.py /tmp/before /tmp/after                   # 124M shape, 1x256 and 8x128, one thread

Each tree's package is imported under its own name, both load the same random 124M-shape weights, and the calls
are timed in turn (before, after, after, before, ...) so that drifts in machine load hit both alike; the table
gives medians and bests, in tokens/s. On a quiet machine, run bench/forward.py and bench/trace.py on each tree.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import random_checkpoint  # noqa: E402


def load_tree(tree: Path, name: str, folder: Path, packages: Path):
    """(GPT2 on the weights in folder, TraceRequest) from tree/minigpt_geom imported as package `name`."""
    shutil.copytree(tree / "minigpt_geom", packages / name)
    package = importlib.import_module(name)
    return package.GPT2.from_pretrained(folder).eval(), package.TraceRequest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("before", type=Path, help="a tree (with minigpt_geom/) before the change")
    parser.add_argument("after", type=Path, help="a tree after the change")
    parser.add_argument("--checkpoint", type=Path, help="folder for the random 124M-shape checkpoint (default: temp)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = random_checkpoint(args.checkpoint or Path(tmp) / "weights")
        packages = Path(tmp) / "packages"
        packages.mkdir()
        sys.path.insert(0, str(packages))
        trees = {label: load_tree(path, f"minigpt_geom_{label}", folder, packages)
                 for label, path in (("before", args.before), ("after", args.after))}
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); tok/s, medians (best) of "
              f"{args.rounds} rounds timed in turn", flush=True)
        for B, T in ((1, 256), (8, 128)):
            idx = torch.randint(0, 50257, (B, T), generator=torch.Generator().manual_seed(0))
            for kind in ("forward", "traced (summaries)", "full capture"):
                seconds: dict[str, list[float]] = {"before": [], "after": []}

                def call(label: str) -> None:
                    model, request = trees[label]
                    trace = {"forward": None, "traced (summaries)": True}.get(kind, request(states=True,
                                                                                             patterns=True))
                    with torch.inference_mode():
                        start = time.perf_counter()
                        model(idx, trace=trace)
                        seconds[label].append(time.perf_counter() - start)

                for label in ("before", "after"):  # one untimed warm-up each
                    call(label)
                    seconds[label].clear()
                for n in range(args.rounds):
                    for label in (("before", "after") if n % 2 == 0 else ("after", "before")):
                        call(label)
                median = {k: B * T / statistics.median(v) for k, v in seconds.items()}
                best = {k: B * T / min(v) for k, v in seconds.items()}
                print(f"{kind:20s} {B}x{T:<4d} median {median['before']:7.0f} -> {median['after']:7.0f} "
                      f"({median['after'] / median['before']:4.2f})   best {best['before']:7.0f} -> "
                      f"{best['after']:7.0f} ({best['after'] / best['before']:4.2f})", flush=True)


if __name__ == "__main__":
    main()
