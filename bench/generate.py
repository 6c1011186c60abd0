"""Greedy generation speed: ours with the KV cache, ours without it, and `transformers.generate`.

    python bench/generate.py                      # random 124M-shape model, batch 1 and 8, prompt 32, 64 new tokens
    python bench/generate.py --weights gpt2       # a real checkpoint instead

Every method continues the same prompt greedily on the same weights; the script checks that the tokens agree
and prints tokens/s (new tokens of the whole batch, prefill included) from the median of --repeats runs after a
warm-up, the methods interleaved so that load from other processes falls on all of them alike (no-cache: one run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import random_checkpoint  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--weights", default=None,
                        help="preset, hub id or directory (default: a random 124M-shape model)")
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes, one table each")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (no-cache: once)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def timed(run: Callable[[], torch.Tensor], device: str) -> tuple[float, torch.Tensor]:
    """Wall time of one call of run(), and its output."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    output = run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, output


def ours_folder(source: str) -> str:
    """The local folder our loader resolved for `source`, for transformers to read the same files."""
    from minigpt_geom.io.hub import resolve_file

    return str(resolve_file(source, "config.json").parent)


def main() -> None:
    """Load both models once, then one table per batch size."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from minigpt_geom import GPT2

    args = parse_args()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        source = args.weights or random_checkpoint(Path(tmp), seed=args.seed)
        ours = GPT2.from_pretrained(source, device=args.device)
        theirs = GPT2LMHeadModel.from_pretrained(str(source) if args.weights is None else ours_folder(source))
    theirs = theirs.to(args.device).eval()
    print(f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"model {ours.config}, {ours.num_parameters() / 1e6:.1f}M parameters")
    assert args.prompt_length + args.new_tokens <= ours.config.n_ctx, "prompt + new tokens must fit the context"
    for batch in args.batch:
        compare(ours, theirs, batch, args)


def compare(ours, theirs, batch: int, args: argparse.Namespace) -> None:
    """Time the three methods on one random prompt [batch, prompt_length] and print a table."""
    from minigpt_geom.text.generation import Sampling, generate

    generator = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, ours.config.vocab_size, (batch, args.prompt_length), generator=generator).to(args.device)
    n = args.new_tokens
    methods = {
        "ours, KV cache": (lambda: generate(ours, prompt, n, Sampling(temperature=0)), args.repeats),
        "ours, no cache": (lambda: generate(ours, prompt, n, Sampling(temperature=0), use_cache=False), 1),
        f"transformers.generate ({theirs.config._attn_implementation})": (
            lambda: theirs.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=n,
                                    min_new_tokens=0, eos_token_id=None, pad_token_id=0),
            args.repeats,
        ),
    }
    print(f"\nbatch {batch}, prompt {args.prompt_length} tokens, {n} new tokens, greedy")
    print(f"{'method':<36} {'best s':>9} {'median s':>9} {'tokens/s':>10}  (median of {args.repeats} runs)")
    times: dict[str, list[float]] = {name: [] for name in methods}
    outputs = {}
    with torch.inference_mode():
        for name, (run, _) in methods.items():  # warm-up
            if name != "ours, no cache":
                run()
        for repeat in range(args.repeats):  # interleaved, so that load from other processes hits all methods alike
            for name, (run, runs) in methods.items():
                if repeat < runs:
                    seconds, outputs[name] = timed(run, args.device)
                    times[name].append(seconds)
    speeds = {}
    for name, seconds in times.items():
        best, median = min(seconds), statistics.median(seconds)
        speeds[name] = batch * n / median
        print(f"{name:<36} {best:>9.3f} {median:>9.3f} {speeds[name]:>10.1f}")
    reference = outputs["ours, KV cache"]
    same = all(torch.equal(out.cpu(), reference.cpu()) for out in outputs.values())
    hf_name = next(name for name in methods if name.startswith("transformers"))
    print(f"same tokens from every method: {'yes' if same else 'NO'}")
    print(f"ours with cache / transformers: {speeds['ours, KV cache'] / speeds[hf_name]:.2f}x")
    print(f"ours with cache / ours without: {speeds['ours, KV cache'] / speeds['ours, no cache']:.2f}x")

if __name__ == "__main__":
    main()
