"""Greedy generation speed: ours with the KV cache, ours without it, and `transformers.generate`.

    python bench/generate.py                      # random 124M-shape model, prompt 32, 64 new tokens, CPU
    python bench/generate.py --weights gpt2       # a real checkpoint instead

Every method continues the same prompt greedily on the same weights; the script checks that the tokens agree
and prints tokens/s (new tokens, prefill included) from the fastest of --repeats runs after a warm-up, the
methods interleaved so that load from other processes falls on all of them alike (no-cache: one run).
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None,
                        help="preset, hub id or directory (default: a random 124M-shape model)")
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
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
    from minigpt_geom.hub import resolve_file

    return str(resolve_file(source, "config.json").parent)


def main() -> None:
    """Time the three methods and print a table."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from minigpt_geom import GPT2
    from minigpt_geom.generate import Sampling, generate

    args = parse_args()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        source = args.weights or random_checkpoint(Path(tmp), seed=args.seed)
        ours = GPT2.from_pretrained(source, device=args.device)
        theirs = GPT2LMHeadModel.from_pretrained(str(source) if args.weights is None else ours_folder(source))
    theirs = theirs.to(args.device).eval()
    n_ctx, vocab = ours.config.n_ctx, ours.config.vocab_size
    generator = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, vocab, (args.batch, args.prompt_length), generator=generator).to(args.device)
    n = args.new_tokens
    assert args.prompt_length + n <= n_ctx, "prompt + new tokens must fit the context"

    methods = {
        "ours, KV cache": (lambda: generate(ours, prompt, n, Sampling(temperature=0)), args.repeats),
        "ours, no cache": (lambda: generate(ours, prompt, n, Sampling(temperature=0), use_cache=False), 1),
        f"transformers.generate ({theirs.config._attn_implementation})": (
            lambda: theirs.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=n,
                                    min_new_tokens=0, eos_token_id=None, pad_token_id=0),
            args.repeats,
        ),
    }
    print(f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"model {ours.config}, {ours.num_parameters() / 1e6:.1f}M parameters")
    print(f"batch {args.batch}, prompt {args.prompt_length} tokens, {n} new tokens, greedy\n")
    print(f"{'method':<36} {'best s':>9} {'median s':>9} {'tokens/s':>10}  (from the best of {args.repeats} runs)")
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
        speeds[name] = args.batch * n / best
        print(f"{name:<36} {best:>9.3f} {median:>9.3f} {speeds[name]:>10.1f}")
    reference = outputs["ours, KV cache"]
    same = all(torch.equal(out.cpu(), reference.cpu()) for out in outputs.values())
    hf_name = next(name for name in methods if name.startswith("transformers"))
    print(f"\nsame tokens from every method: {'yes' if same else 'NO'}")
    print(f"ours with cache / transformers: {speeds['ours, KV cache'] / speeds[hf_name]:.2f}x")
    print(f"ours with cache / ours without: {speeds['ours, KV cache'] / speeds['ours, no cache']:.2f}x")


if __name__ == "__main__":
    main()
