"""Cost of the diagnostics: forward time with tracing off and on, full capture against TransformerLens, memory.

    python bench/trace.py            # CPU float32, 124M shape: off/on at 1x1024 and 8x128, full capture at 1x512
    python bench/trace.py --gpu      # CUDA only: float32 and bfloat16, with MFU ("not measured" without CUDA)

"plain" is the bare math of the forward pass (the same steps, none of the diagnostic plumbing): the
reference for "tracing off costs nothing". "full" keeps everything, `TraceRequest(states=True, patterns=True)`:
it is timed against TransformerLens' `run_with_cache` (every activation, every pattern) on the same weights
when `transformer-lens` is importable, an optional bench extra and never a run-time dependency:

    python3 -m venv /tmp/tl && /tmp/tl/bin/pip install torch transformer-lens   # pin torch to the one you use
    PYTHONPATH=$PWD /tmp/tl/bin/python bench/trace.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (forward_flops_per_token, gpu_or_not_measured, gpu_peak_flops, interleaved_seconds,  # noqa: E402
                    random_checkpoint, timed)

from minigpt_geom import GPT2  # noqa: E402
from minigpt_geom.model.attention import merge_heads, split_heads  # noqa: E402
from minigpt_geom.model.fused import FUSED  # noqa: E402
from minigpt_geom.model.trace import TraceRequest  # noqa: E402

FULL = TraceRequest(states=True, patterns=True)


def plain_forward(model: GPT2, idx: torch.Tensor) -> torch.Tensor:
    """The forward pass written straight through on the fused kernels: embeddings, blocks, ln_f, unembedding."""
    x = model.wte(idx) + model.wpe(torch.arange(idx.shape[1], device=idx.device))
    for block in model.h:
        q, k, v = (split_heads(p, block.attn.n_head) for p in block.attn.c_attn(block.ln_1(x)[0]).chunk(3, dim=-1))
        x = x + block.attn.c_proj(merge_heads(FUSED.attend(q, k, v)))
        x = x + block.mlp(block.ln_2(x)[0])
    return model.unembed(model.ln_f(x)[0])


def load_transformer_lens(folder: Path, device: torch.device, dtype: torch.dtype):
    """TransformerLens' TransformerBridge on the same files (raw HF weights, eager attention), or None."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
        from transformers import GPT2LMHeadModel
    except ImportError:
        return None
    hf_model = GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="eager", dtype=dtype)
    return TransformerBridge.boot_transformers(str(folder), hf_model=hf_model.to(device).eval(), device=device,
                                               dtype=dtype)


def tracing_cost(model: GPT2, device: torch.device, shapes, repeats: int) -> None:
    """plain / tracing off / tracing on (summaries only) at each shape, with MFU on a known GPU."""
    peak = gpu_peak_flops(model.wte.weight.dtype) if device.type == "cuda" else None
    name = str(model.wte.weight.dtype).removeprefix("torch.")
    for B, T in shapes:
        idx = torch.randint(0, model.config.vocab_size, (B, T), device=device)
        seconds = interleaved_seconds({
            "plain": timed(lambda: plain_forward(model, idx), device),
            "off": timed(lambda: model(idx), device),
            "on": timed(lambda: model(idx, trace=True), device),
        }, repeats)
        plain, off, on = seconds["plain"], seconds["off"], seconds["on"]
        with torch.inference_mode():
            _, trace = model(idx, trace=True)
        states = (model.config.n_layer + 1) * B * T * model.config.n_embd * 4
        line = (f"{device.type} {name:8s} {B:>2}x{T:<5} plain {plain * 1e3:8.1f} ms  trace off {off * 1e3:8.1f} ms "
                f"({off / plain - 1:+6.1%})  trace on {on * 1e3:8.1f} ms ({on / off:4.2f}x off)  "
                f"trace {trace.nbytes() / 2**20:6.1f} MiB = {trace.nbytes() / states:5.1%} of states")
        if peak:
            flops = forward_flops_per_token(model.config) * B * T
            line += f"  MFU off {flops / off / peak:5.1%}, on {flops / on / peak:5.1%}"
        print(line, flush=True)


def full_capture(folder: Path, model: GPT2, device: torch.device, shapes, repeats: int) -> None:
    """Keep everything: ours with states and patterns against TransformerLens' run_with_cache."""
    dtype = model.wte.weight.dtype
    lens = load_transformer_lens(folder, device, dtype)
    name = str(dtype).removeprefix("torch.")
    for B, T in shapes:
        idx = torch.randint(0, model.config.vocab_size, (B, T), device=device)
        calls = {"ours": timed(lambda: model(idx, trace=FULL), device)}
        if lens is not None:
            calls["lens"] = timed(lambda: lens.run_with_cache(idx), device)
        seconds = interleaved_seconds(calls, repeats)
        with torch.inference_mode():
            logits, trace = model(idx, trace=FULL)
        line = (f"{device.type} {name:8s} {B:>2}x{T:<5} full capture: ours {seconds['ours'] * 1e3:8.1f} ms "
                f"({trace.nbytes() / 2**30:5.2f} GiB)")
        if lens is None:
            line += "   TransformerLens run_with_cache: not measured (transformer-lens not importable)"
        else:
            with torch.inference_mode():
                lens_logits, cache = lens.run_with_cache(idx)
            cached = sum(t.numel() * t.element_size() for t in cache.values())
            line += (f"   TransformerLens run_with_cache {seconds['lens'] * 1e3:8.1f} ms ({len(cache)} activations, "
                     f"{cached / 2**30:5.2f} GiB)   speed ours/TL {seconds['lens'] / seconds['ours']:4.2f}   "
                     f"max |Δ logits| {(lens_logits.float() - logits.float()).abs().max().item():.1e}")
            del cache
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--checkpoint", type=Path, help="folder for the random 124M-shape checkpoint (default: temp)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu", action="store_true", help="CUDA instead of the CPU, float32 and bfloat16")
    args = parser.parse_args()
    if args.gpu and not gpu_or_not_measured("bench/trace.py"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = random_checkpoint(args.checkpoint or Path(tmp))
        if not args.gpu:
            print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads", flush=True)
            model = GPT2.from_pretrained(folder)
            tracing_cost(model, torch.device("cpu"), [(1, 1024), (8, 128)], args.repeats)
            full_capture(folder, model, torch.device("cpu"), [(1, 512)], args.repeats)
            return
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}; MFU = 2·N·tokens/s over the dense peak",
              flush=True)
        for dtype in (torch.float32, torch.bfloat16):
            model = GPT2.from_pretrained(folder, device="cuda", dtype=dtype)
            tracing_cost(model, torch.device("cuda"), [(1, 1024), (8, 128), (16, 1024)], args.repeats * 4)
            full_capture(folder, model, torch.device("cuda"), [(1, 512), (8, 1024)], args.repeats * 2)
            del model


if __name__ == "__main__":
    main()
