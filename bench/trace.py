"""Cost of the diagnostics: forward time with tracing off and on, and the trace's memory.

    python bench/trace.py            # CPU float32, 124M shape, 1x1024 and 8x128
    python bench/trace.py --gpu      # the same on CUDA as well

"plain" is the bare math of the forward pass (the same steps, none of the diagnostic plumbing): the
reference for "tracing off costs nothing"."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_seconds, random_checkpoint  # noqa: E402

from minigpt_geom import GPT2  # noqa: E402
from minigpt_geom.attention import attend, merge_heads, split_heads  # noqa: E402


def plain_forward(model: GPT2, idx: torch.Tensor) -> torch.Tensor:
    """The forward pass written straight through: embeddings, blocks, ln_f, unembedding."""
    x = model.wte(idx) + model.wpe(torch.arange(idx.shape[1], device=idx.device))
    for block in model.h:
        q, k, v = (split_heads(p, block.attn.n_head) for p in block.attn.c_attn(block.ln_1(x)[0]).chunk(3, dim=-1))
        x = x + block.attn.c_proj(merge_heads(attend(q, k, v)))
        x = x + block.mlp(block.ln_2(x)[0])
    return model.unembed(model.ln_f(x)[0])


def run(folder: Path, device: torch.device, shapes, repeats: int) -> None:
    model = GPT2.from_pretrained(folder, device=device)

    def timed(fn):
        def call():
            with torch.inference_mode():
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return call

    for B, T in shapes:
        idx = torch.randint(0, model.config.vocab_size, (B, T), device=device)
        seconds = interleaved_seconds({
            "plain": timed(lambda: plain_forward(model, idx)),
            "off": timed(lambda: model(idx)),
            "on": timed(lambda: model(idx, trace=True)),
        }, repeats)
        plain, off, on = seconds["plain"], seconds["off"], seconds["on"]
        with torch.inference_mode():
            _, trace = model(idx, trace=True)
        states = (model.config.n_layer + 1) * B * T * model.config.n_embd * 4
        print(f"{device.type} {B:>2}x{T:<5} plain {plain * 1e3:8.1f} ms  trace off {off * 1e3:8.1f} ms "
              f"({off / plain - 1:+6.1%})  trace on {on * 1e3:8.1f} ms ({on / off:4.2f}x off)  "
              f"trace {trace.nbytes() / 2**20:6.1f} MiB = {trace.nbytes() / states:5.1%} of states "
              f"({states / 2**20:.0f} MiB)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="folder for the random 124M-shape checkpoint (default: temp)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = random_checkpoint(args.checkpoint or Path(tmp))
        run(folder, torch.device("cpu"), [(1, 1024), (8, 128)], args.repeats)
        if args.gpu and torch.cuda.is_available():
            run(folder, torch.device("cuda"), [(1, 1024), (8, 128), (16, 1024)], args.repeats * 4)


if __name__ == "__main__":
    main()
