"""Timings of the analyses on a random GPT-2 of the 124M shape (no download).

    python bench/analyses.py                      # qk over all 50257 words for one head, svd of one block,
                                                  # and a 64-token HTML report
    python bench/analyses.py --vocab-limit 5000   # a quick run (qk on the first 5000 words only)
    python bench/analyses.py --only svd report

Each benchmark is a function `bench_<name>(model, args) -> list[Row]` registered in BENCHES; add one by
writing the function and one entry there (and its options in `add_arguments`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from minigpt_geom import GPT2

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_seconds, random_checkpoint  # noqa: E402


@dataclass(frozen=True)
class Row:
    """One line of the timing table."""

    analysis: str
    workload: str
    seconds: float
    rate: str  # throughput in the unit that fits the analysis


def bench_qk(model: GPT2, args: argparse.Namespace) -> list[Row]:
    """`qk`: the top query-key pairs of one head over the vocabulary (V² scores in blocks of queries)."""
    from tqdm import tqdm

    from minigpt_geom.analysis.qk import strongest_pairs

    V = min(args.vocab_limit or model.config.vocab_size, model.config.vocab_size)
    start = time.perf_counter()
    with tqdm(total=V, unit="word", disable=args.no_progress) as progress:
        strongest_pairs(model, args.block, args.head, args.k, chunk_size=args.block_size, vocab_limit=V,
                        progress=progress)
    seconds = time.perf_counter() - start
    workload = f"block {args.block} head {args.head}, {V} x {V} words, top {args.k}, block size {args.block_size}"
    return [Row("qk", workload, seconds, f"{V / seconds:,.0f} query words/s ({V * V / seconds / 1e6:,.0f} M scores/s)")]


def bench_svd(model: GPT2, args: argparse.Namespace) -> list[Row]:
    """`svd`: W_QK and W_VO of every head of one block: SVD, sign rule, word tables, key-bias words."""
    from minigpt_geom.analysis.circuits import ln_1_embeddings
    from minigpt_geom.analysis.svd import CIRCUITS, head_svd, key_bias_words, singular_pair_words

    heads = range(model.config.n_head)
    start = time.perf_counter()
    sphere = ln_1_embeddings(model, args.block)
    for head in heads:
        for circuit in CIRCUITS:
            singular_pair_words(model, head_svd(model, args.block, head, circuit, sphere), 20, 3, sphere)
        key_bias_words(model, args.block, head, 5, sphere)
    seconds = time.perf_counter() - start
    n = len(heads) * len(CIRCUITS)
    return [Row("svd", f"block {args.block}, {len(heads)} heads x (QK, VO), 20 pairs, full vocabulary", seconds,
                f"{n / seconds:,.1f} matrices/s")]


def synthetic_tokenizer(vocab_size: int, seed: int = 0):
    """A byte-level BPE tokenizer of GPT-2's size: 256 bytes, random merges of earlier tokens, <|endoftext|>.

    The official vocabulary cannot be downloaded here; the report's cost hardly depends on which words it is."""
    import random

    from minigpt_geom.text.tokenizer import Tokenizer

    rng = random.Random(seed)
    tokens = [bytes([b]) for b in range(256)]
    known, merges = set(tokens), []
    while len(tokens) < vocab_size - 1:
        a, b = rng.choice(tokens[:2000]), rng.choice(tokens[:2000])
        if a + b not in known:
            merges.append((a, b))
            tokens.append(a + b)
            known.add(a + b)
    return Tokenizer({t: i for i, t in enumerate(tokens)}, merges, {"<|endoftext|>": len(tokens)})


def bench_report(model: GPT2, args: argparse.Namespace) -> list[Row]:
    """`report`: the whole HTML page (forward pass with trace, lens, 3-D projection, plots) for a 64-token text."""
    from minigpt_geom.analysis.report import build_report

    tokenizer = synthetic_tokenizer(model.config.vocab_size, args.seed)
    text = "To kill two birds with one stone. " * 20
    while len(tokenizer.encode(text)) > args.report_tokens:  # the longest prefix of exactly that many tokens
        text = text[:-1]
    n = len(tokenizer.encode(text))
    start = time.perf_counter()
    page = build_report(model, tokenizer, text)
    seconds = time.perf_counter() - start
    return [Row("report", f"{n}-token text, {len(page) / 1e6:.1f} MB of HTML", seconds, f"{n / seconds:,.1f} tokens/s")]


def bench_drift(model: GPT2, args: argparse.Namespace) -> list[Row]:
    """`drift` against a plain forward pass on the same windows: with log-probabilities, and without."""
    from minigpt_geom.analysis.drift import corpus_drift

    g = torch.Generator().manual_seed(args.seed)
    windows = torch.randint(model.config.vocab_size, (args.drift_windows, args.drift_context), generator=g).tolist()
    tokens = args.drift_windows * args.drift_context
    forward = lambda: [model(torch.tensor(windows[i:i + 4])) for i in range(0, len(windows), 4)]  # noqa: E731
    with torch.inference_mode():  # interleaved, so that the shared machine's load hits each alike
        timings = interleaved_seconds({"plain forward": forward,
                                       "drift (default)": lambda: corpus_drift(model, windows, logprobs=False),
                                       "drift --logprobs": lambda: corpus_drift(model, windows, logprobs=True)},
                                      repeats=args.repeats)
    base = timings["plain forward"]
    workload = f"{args.drift_windows} windows of {args.drift_context} tokens, batches of 4"
    return [Row(name, workload, seconds, f"{tokens / seconds:,.0f} tokens/s = {seconds / base:.2f}x the plain forward")
            for name, seconds in timings.items()]


# name -> benchmark; run in this order.
BENCHES: dict[str, Callable[[GPT2, argparse.Namespace], list[Row]]] = {
    "qk": bench_qk, "svd": bench_svd, "report": bench_report, "drift": bench_drift,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of every benchmark."""
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), help="run only these (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--block", type=int, default=0, help="block analysed (default: 0)")
    parser.add_argument("--head", type=int, default=0, help="head for qk (default: 0)")
    parser.add_argument("-k", type=int, default=20, help="pairs for qk (default: 20)")
    parser.add_argument("--block-size", type=int, default=512, help="query words per block for qk (default: 512)")
    parser.add_argument("--vocab-limit", type=int, help="qk on the first N words only (default: all 50257)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--report-tokens", type=int, default=64, help="tokens in the report's text (default: 64)")
    parser.add_argument("--drift-windows", type=int, default=4, help="windows for drift (default: 4, one batch)")
    parser.add_argument("--drift-context", type=int, default=1024,
                        help="tokens a drift window (default: 1024, the command's default: the model's context)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each drift contender, median kept (default: 3)")


def main(argv: list[str] | None = None) -> None:
    """Build the random model, run the benchmarks, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:  # 12 x 12 heads, d = 768, V = 50257, every weight random
        model = GPT2.from_pretrained(random_checkpoint(Path(tmp), seed=args.seed))
    rows = []
    for name in args.only or BENCHES:
        rows += BENCHES[name](model, args)
    print(f"\nrandom GPT-2 124M shape, float32, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    widths = [max(len(h), *(len(v) for v in col)) for h, col in
              zip(("analysis", "workload", "seconds", "rate"),
                  zip(*[(r.analysis, r.workload, f"{r.seconds:.2f}", r.rate) for r in rows]))]
    for line in [("analysis", "workload", "seconds", "rate"), tuple("-" * w for w in widths),
                 *[(r.analysis, r.workload, f"{r.seconds:.2f}", r.rate) for r in rows]]:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())


if __name__ == "__main__":
    main()
