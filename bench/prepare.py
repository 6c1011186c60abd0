"""Throughput and peak memory of `prepare` on a generated corpus: reference vs fast backend, one process vs every core.

    python bench/prepare.py                  # the full size: 200 MB, one file with whitespace, one without
    python bench/prepare.py --megabytes 20   # a smaller corpus: the same runs, a minute instead of seven
    python bench/prepare.py --corpora spaced --repeats 3   # medians of 3 runs taken in turn, the spaced text only

The text is lines drawn at random from --base-megabytes of bench/tokenizer.py's text (Zipf words, numbers,
punctuation, code-ish lines, some Unicode), written as one file; the second corpus is the same text with every whitespace character removed, so that the reader
cuts it at its 2^20-character bound and the pre-tokeniser's pieces run long. The vocabulary (--merges BPE
merges) is trained on that text with Hugging Face `tokenizers` and written in GPT-2's layout.

Each run is `data.prepare` in a fresh process, timed from the call to its return (reading, tokenising, the
split, writing train.bin/val.bin). Peak RSS is that process's (`ru_maxrss`) and its largest worker's; a forked
worker's figure counts the pages it shares with the main process, so main + workers × worker is an upper bound.
Every run must write the same token files: the table shows their SHA-256, and the script stops if they differ. With
--repeats N each configuration runs N times, all taken in turn; the table gives the median time and the largest RSS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_corpus(folder: Path, base: str, megabytes: float) -> tuple[Path, Path]:
    """One file of `megabytes` of lines drawn at random from `base`, and the same text without whitespace."""
    rng = random.Random(0)
    lines = base.splitlines(keepends=True)
    spaced, packed = folder / "spaced" / "corpus.txt", folder / "packed" / "corpus.txt"
    for path in (spaced, packed):
        path.parent.mkdir()
    with spaced.open("w", encoding="utf-8") as a, packed.open("w", encoding="utf-8") as b:
        written = 0.0
        while written < megabytes:
            part = "".join(rng.choices(lines, k=10_000))
            a.write(part)
            b.write(re.sub(r"\s", "", part))
            written += len(part.encode("utf-8")) / 1e6
    return spaced, packed


def run_once(corpus: str, vocab: str, out: str, backend: str, workers: int) -> dict:
    """One prepare in this process: seconds, token count, SHA-256 of the token files, peak RSS (MB)."""
    from minigpt_geom.text.token_files import prepare

    start = time.perf_counter()
    tokens = prepare(corpus, vocab, out, backend=backend, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    peaks = {"rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # before the hashing below
             "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    digest = hashlib.sha256()
    for name in ("train.bin", "val.bin"):
        with (Path(out) / name).open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return {"seconds": seconds, "tokens": len(tokens.train) + len(tokens.val), "sha256": digest.hexdigest()[:16],
            "backend": tokens.meta["tokenizer_backend"], **peaks}


def main() -> None:
    """Generate the corpora and the vocabulary, run every configuration in its own process, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=200.0, help="size of the generated corpus (default 200)")
    parser.add_argument("--base-megabytes", type=float, default=2.0,
                        help="generated text the corpus's lines are drawn from and the vocabulary trained on (default 2)")
    parser.add_argument("--merges", type=int, default=10_000, help="BPE merges of the vocabulary (default 10000)")
    parser.add_argument("--backends", nargs="+", default=["reference", "fast"], choices=["reference", "fast"])
    parser.add_argument("--workers", nargs="+", type=int, default=None,
                        help="process counts to compare (default: 1 and every core)")
    parser.add_argument("--corpora", nargs="+", default=["spaced", "packed"], choices=["spaced", "packed"],
                        help="with whitespace, without, or both (default)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each configuration, taken in turn; the median time is reported (default 1)")
    parser.add_argument("--run", nargs=5, metavar=("CORPUS", "VOCAB", "OUT", "BACKEND", "WORKERS"),
                        help=argparse.SUPPRESS)  # one configuration, in a child process
    args = parser.parse_args()
    if args.run:
        corpus, vocab, out, backend, workers = args.run
        print(json.dumps(run_once(corpus, vocab, out, backend, int(workers))))
        return

    from tokenizer import make_text, write_vocabulary  # bench/tokenizer.py

    from minigpt_geom.text.parallel_tokenize import available_cores

    cores = available_cores()
    workers = args.workers or sorted({1, cores})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        base = make_text(args.base_megabytes)
        corpora = write_corpus(folder, base, args.megabytes)
        (folder / "vocab").mkdir()
        merges = write_vocabulary(base, args.merges, folder / "vocab")
        print(f"corpus: {args.megabytes:g} MB in one file, with and without whitespace; vocabulary 256 + {merges} "
              f"merges + <|endoftext|> ({time.perf_counter() - start:.0f} s to generate); {cores} cores", flush=True)
        print(f"\n{'corpus':12} {'backend':10} {'processes':>9} {'MB/s':>7} {'seconds':>8} {'tokens':>11} "
              f"{'peak RSS main':>13} {'worker':>7}  token files", flush=True)
        for corpus in (path for path in corpora if path.parent.name in args.corpora):
            megabytes = corpus.stat().st_size / 1e6
            configurations = [(backend, count) for backend in args.backends for count in workers]
            runs: dict[tuple[str, int], list[dict]] = {configuration: [] for configuration in configurations}
            for _ in range(args.repeats):  # in turn, so that a change in the machine's load hits each alike
                for backend, count in configurations:
                    out = folder / f"out-{corpus.parent.name}-{backend}-{count}"
                    runs[backend, count].append(json.loads(subprocess.run(
                        [sys.executable, __file__, "--run", str(corpus), str(folder / "vocab"), str(out), backend,
                         str(count)], check=True, capture_output=True, text=True).stdout))
                    shutil_rmtree(out)
            speeds = {}
            for (backend, count), results in runs.items():
                result = sorted(results, key=lambda r: r["seconds"])[len(results) // 2]  # the median run
                speeds[backend, count] = megabytes / result["seconds"]
                worker = f"{max(r['rss_worker_mb'] for r in results):7.0f}" if count > 1 else f"{'-':>7}"
                hashes = sorted({r["sha256"] for r in results})
                print(f"{corpus.parent.name:12} {result['backend']:10} {count:9} {speeds[backend, count]:7.2f} "
                      f"{result['seconds']:8.1f} {result['tokens']:11,} {max(r['rss_main_mb'] for r in results):10.0f} "
                      f"MB {worker}  {' '.join(hashes)}", flush=True)
            if len({r["sha256"] for results in runs.values() for r in results}) > 1:
                sys.exit(f"{corpus.parent.name}: the runs wrote different token files")
            for backend in args.backends:
                if len(workers) > 1:
                    print(f"{corpus.parent.name}, {backend}: {workers[-1]} processes "
                          f"{speeds[backend, workers[-1]] / speeds[backend, workers[0]]:.2f}x {workers[0]}", flush=True)


def shutil_rmtree(path: Path) -> None:
    """Remove a run's output (the disk holds one at a time)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
