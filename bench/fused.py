"""The fast path against the reference math: each kernel of minigpt_geom/model/fused.py beside the computation
it replaces, at GPT-2 124M's sizes, then the whole forward pass with each kernel set (model.kernels).

    python bench/fused.py                  # CPU float32: kernels, forward 1x1024 untraced and traced
    python bench/fused.py --query-blocks   # also the traced loop's block size, 32-256 (how QUERY_BLOCK was chosen)
    python bench/fused.py --device cuda    # the same on a GPU

bench/NOTES.md keeps the figures this gave and why each fused kernel and constant is what it is.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_seconds, random_checkpoint, timed  # noqa: E402

from minigpt_geom import GPT2, reference_math  # noqa: E402
from minigpt_geom.model import fused  # noqa: E402
from minigpt_geom.model.fused import FUSED  # noqa: E402
from minigpt_geom.model.kernels import REFERENCE  # noqa: E402


def reference(fn):
    """fn under reference_math(): a model's forward pass runs the reference math."""
    def call():
        with reference_math():
            return fn()
    return call


def row(name: str, seconds: dict[str, float]) -> None:
    """One line: each contender's time and how many times slower than the fused kernel it is."""
    fast = seconds["fused"]
    print(f"{name:34s} " + "  ".join(f"{k} {v * 1e3:8.2f} ms ({v / fast:4.2f}x)" for k, v in seconds.items()),
          flush=True)


def kernels(device: torch.device, repeats: int) -> None:
    """Each fused kernel against its reference, on 124M-shape tensors (d = 768, 12 heads of 64)."""
    g = torch.Generator(device=device).manual_seed(0)
    for rows in (1, 1024):
        x = torch.randn(rows, 768, device=device, generator=g)
        row(f"layer norm steps 1-2, {rows}x768", interleaved_seconds({
            "fused": timed(lambda: FUSED.sphere_projection(x, 1e-5), device),
            "reference": timed(lambda: REFERENCE.sphere_projection(x, 1e-5), device)}, repeats))
    u = torch.randn(1024, 3072, device=device, generator=g)
    row("GELU, 1024x3072", interleaved_seconds({
        "fused": timed(lambda: FUSED.gelu(u), device),
        "reference": timed(lambda: REFERENCE.gelu(u), device),
        "F.gelu(tanh)": timed(lambda: F.gelu(u, approximate="tanh"), device)}, repeats))
    for T, S in ((1024, 1024), (1, 1024)):
        q = torch.randn(1, 12, T, 64, device=device, generator=g)
        k, v = (torch.randn(1, 12, S, 64, device=device, generator=g) for _ in range(2))
        row(f"attention, T={T} S={S}", interleaved_seconds({
            "fused": timed(lambda: FUSED.attend(q, k, v), device),
            "reference": timed(lambda: REFERENCE.attend(q, k, v), device)}, repeats))
    q = torch.randn(1, 12, 1024, 64, device=device, generator=g)
    row("attention traced, T=S=1024", interleaved_seconds({
        "fused": timed(lambda: FUSED.attend_traced(q, k, v, False), device),
        "reference": timed(lambda: REFERENCE.attend_traced(q, k, v, False), device)}, repeats))
    assert math.isfinite(float(FUSED.attend(q, k, v).sum()))


def forward(model: GPT2, device: torch.device, repeats: int) -> None:
    """The whole forward pass at 1x1024, untraced and traced, on each kernel set."""
    idx = torch.randint(0, model.config.vocab_size, (1, 1024), device=device)
    for trace in (None, True):
        row(f"forward 1x1024, {'traced' if trace else 'untraced'}", interleaved_seconds({
            "fused": timed(lambda: model(idx, trace=trace), device),
            "reference": timed(reference(lambda: model(idx, trace=trace)), device)}, repeats))


def query_blocks(model: GPT2, device: torch.device, repeats: int) -> None:
    """Traced forward time for each query block size (fused.QUERY_BLOCK), at 1x1024 and 8x128."""
    default = fused.QUERY_BLOCK
    for B, T in ((1, 1024), (8, 128)):
        idx = torch.randint(0, model.config.vocab_size, (B, T), device=device)
        calls = {}
        for block in (32, 64, 128, 256):
            def call(block=block):
                fused.QUERY_BLOCK = block
                model(idx, trace=True)
            calls[f"block {block}"] = timed(call, device)
        seconds = interleaved_seconds(calls, repeats)
        fused.QUERY_BLOCK = default
        print(f"traced forward {B}x{T} by query block: " + "  ".join(f"{k} {v * 1e3:8.1f} ms" for k, v in seconds.items()),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--checkpoint", type=Path, help="folder for the random 124M-shape checkpoint (default: temp)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--query-blocks", action="store_true", help="also time the traced loop's block sizes")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads; "
          "(Nx) = times the fused kernel's time")
    kernels(device, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        model = GPT2.from_pretrained(random_checkpoint(args.checkpoint or Path(tmp)), device=device).eval()
        forward(model, device, args.repeats)
        if args.query_blocks:
            query_blocks(model, device, args.repeats)


if __name__ == "__main__":
    main()
