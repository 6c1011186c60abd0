"""Load time and peak memory: minigpt_geom versus transformers.GPT2LMHeadModel.from_pretrained.

    python bench/load.py [--checkpoint DIR] [--repeats N]

Each load runs in its own fresh process, which imports only its own loader. The peak is the process's
high-water mark of resident memory (VmHWM), reset after the imports, minus its RSS then: what the load
itself added. transformers maps the file and reads a weight only when it is first used, so the time and peak
of a first read of every weight (a sum over each parameter) follow, when the weights are really in memory."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def current_rss() -> int:
    """Resident set size now, in bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss() -> int:
    """High-water mark of the resident set size since the last reset_peak_rss, in bytes (VmHWM)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def reset_peak_rss() -> None:
    """Make VmHWM start again from the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(loader: str, folder: str) -> None:
    """Load once in this process, then read every weight once; print the times and peaks as JSON."""
    import torch

    if loader == "ours":
        from minigpt_geom import GPT2 as Model
    else:
        from transformers import GPT2LMHeadModel as Model
    reset_peak_rss()
    baseline = current_rss()
    start = time.perf_counter()
    model = Model.from_pretrained(folder)
    seconds = time.perf_counter() - start
    peak_rise = peak_rss() - baseline
    start = time.perf_counter()
    with torch.no_grad():
        for p in model.parameters():
            p.sum()  # reads the weight: transformers' mapped weights come into memory only now
    read_seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rise": peak_rise, "read_seconds": read_seconds,
                      "total_seconds": seconds + read_seconds, "read_rise": peak_rss() - baseline}))


def load_in_fresh_process(loader: str, folder: Path) -> dict:
    """One load by `loader` in a new Python process: {seconds, peak_rise, read_seconds, total_seconds, read_rise}."""
    out = subprocess.run([sys.executable, __file__, "--child", loader, str(folder)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(loaders: tuple[str, ...], folder: Path, repeats: int) -> dict[str, dict]:
    """Best time and lowest peaks of `repeats` loads each, the loaders taking turns so drifts in machine load
    hit both alike."""
    runs: dict[str, list[dict]] = {name: [] for name in loaders}
    for _ in range(repeats):
        for name in loaders:
            runs[name].append(load_in_fresh_process(name, folder))
    return {name: {key: min(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}


def main() -> None:
    """Write (or reuse) a 124M-shape checkpoint, load it with both loaders, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="folder with a 124M-shape checkpoint (default: a random one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    from common import random_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        folder = random_checkpoint(args.checkpoint or Path(tmp))
        size = (folder / "model.safetensors").stat().st_size
        print(f"model.safetensors: {size / 2**20:.0f} MiB (file in the page cache: warm loads); "
              f"best of {args.repeats} fresh processes each, taking turns")
        results = measure(("ours", "transformers"), folder, args.repeats)
        print(f"{'loader':12s} {'load':>7s} {'peak RSS rise':>21s} {'+ first read':>13s} {'peak RSS rise':>21s}")
        for name, r in results.items():
            print(f"{name:12s} {r['seconds']:6.2f}s {r['peak_rise'] / 2**20:6.0f} MiB = {r['peak_rise'] / size:4.2f}x "
                  f"{r['read_seconds']:12.2f}s {r['read_rise'] / 2**20:6.0f} MiB = {r['read_rise'] / size:4.2f}x")
        ours, theirs = results["ours"], results["transformers"]
        print(f"load speed-up {theirs['seconds'] / ours['seconds']:.2f}x; load + first read speed-up "
              f"{theirs['total_seconds'] / ours['total_seconds']:.2f}x")


if __name__ == "__main__":
    main()
