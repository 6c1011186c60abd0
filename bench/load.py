"""Load time and peak memory: minigpt_geom versus transformers.GPT2LMHeadModel.from_pretrained.

    python bench/load.py [--checkpoint DIR]

Each loader runs in a fresh process; peak memory is the rise of the process's peak RSS over its RSS
after imports, compared with the size of model.safetensors."""

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


def child(loader: str, folder: str) -> None:
    """Load once in this process and print {seconds, peak_rise} as JSON."""
    import torch  # noqa: F401  (imports before the baseline)
    import transformers  # noqa: F401
    from minigpt_geom import GPT2

    baseline = current_rss()
    start = time.perf_counter()
    if loader == "ours":
        model = GPT2.from_pretrained(folder)
    else:
        model = transformers.GPT2LMHeadModel.from_pretrained(folder)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_rise": peak - baseline, "params": sum(p.numel() for p in model.parameters())}))


def measure(loader: str, folder: Path, repeats: int) -> dict:
    """Best time and lowest peak of `repeats` fresh-process loads."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--child", loader, str(folder)], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"seconds": min(r["seconds"] for r in runs), "peak_rise": min(r["peak_rise"] for r in runs)}


def main() -> None:
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
        print(f"model.safetensors: {size / 2**20:.0f} MiB (file in the page cache: warm loads)")
        results = {name: measure(name, folder, args.repeats) for name in ("ours", "transformers")}
        for name, r in results.items():
            print(f"{name:12s} load {r['seconds']:6.2f} s   peak memory rise {r['peak_rise'] / 2**20:6.0f} MiB "
                  f"= {r['peak_rise'] / size:4.2f} x file size")
        print(f"speed-up {results['transformers']['seconds'] / results['ours']['seconds']:.2f}x")


if __name__ == "__main__":
    main()
