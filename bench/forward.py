"""Forward-pass throughput of minigpt_geom against transformers on the same 124M-shape weights.

    python bench/forward.py            # CPU: float32 and bfloat16 at 1x1024 and 8x128, vs HF sdpa and eager
    python bench/forward.py --gpu      # CUDA only: float32 and bfloat16 at 16x1024, with MFU ("not measured"
                                       # without CUDA)

bfloat16 on CPU runs only where the CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX): elsewhere torch
falls back to a scalar kernel about 100x slower than float32, and the rows say so instead (--dtype bfloat16
forces them). Each bfloat16 row also gives its logits' agreement with float32 on the same input.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (bfloat16_matmul_slowdown, cpu_description, forward_flops_per_token, gpu_or_not_measured,  # noqa: E402
                    gpu_peak_flops, interleaved_seconds, logit_agreement, random_checkpoint)

from minigpt_geom import GPT2  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_hf(folder: Path, attn: str, device, dtype):
    """transformers' GPT2LMHeadModel on the same files, with the given attention implementation."""
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation=attn, dtype=dtype).to(device).eval()


def measure_pair(ours, theirs, idx, repeats: int, device) -> tuple[float, float]:
    """Tokens per second of each model on idx, timed alternately (medians)."""
    def forward(model):
        def call():
            with torch.inference_mode():
                model(idx)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return call
    seconds = interleaved_seconds({"ours": forward(ours), "theirs": forward(theirs)}, repeats)
    return idx.numel() / seconds["ours"], idx.numel() / seconds["theirs"]


def run(folder: Path, device: torch.device, dtype: torch.dtype, shapes, attns, repeats: int,
        float32_speed: dict) -> None:
    """One row per shape and HF attention implementation; bfloat16 rows add accuracy and speed-up over float32."""
    ours = GPT2.from_pretrained(folder, device=device, dtype=dtype)
    reference = GPT2.from_pretrained(folder, device=device) if dtype != torch.float32 else None
    peak = gpu_peak_flops(dtype) if device.type == "cuda" else None
    name = str(dtype).removeprefix("torch.")
    for attn in attns:
        theirs = load_hf(folder, attn, device, dtype)
        for B, T in shapes:
            idx = torch.randint(0, ours.config.vocab_size, (B, T), device=device)
            ours_tps, theirs_tps = measure_pair(ours, theirs, idx, repeats, device)
            line = (f"{device.type:4s} {name:8s} {B:>2}x{T:<5} vs HF {attn:5s} ours {ours_tps:10,.0f} tok/s   "
                    f"HF {theirs_tps:10,.0f} tok/s   ratio {ours_tps / theirs_tps:5.2f}")
            if peak:
                line += f"   MFU ours {forward_flops_per_token(ours.config) * ours_tps / peak:6.1%}"
            key = (device.type, B, T, attn)
            if reference is None:
                float32_speed[key] = ours_tps
            else:
                if key in float32_speed:
                    line += f"   {ours_tps / float32_speed[key]:4.2f}x our float32"
                with torch.inference_mode():
                    top1, log_p = logit_agreement(reference(idx), ours(idx))
                line += f"   vs float32: top-1 {top1:6.2%}, max |Δ log p| {log_p:.3f}"
            print(line, flush=True)
        del theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--checkpoint", type=Path, help="folder to write/read the random checkpoint (default: temp)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=[*DTYPES, "both"], default="both",
                        help="both: float32, then bfloat16 where the CPU multiplies it natively (default)")
    parser.add_argument("--gpu", action="store_true", help="CUDA instead of the CPU: float32 and bfloat16 at 16x1024")
    args = parser.parse_args()
    if args.gpu and not gpu_or_not_measured("bench/forward.py"):
        return
    dtypes = list(DTYPES) if args.dtype == "both" else [args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        folder = random_checkpoint(args.checkpoint or Path(tmp))
        float32_speed: dict = {}
        if args.gpu:
            print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}; MFU = 2·N·tokens/s over the dense "
                  f"peak, N = {forward_flops_per_token(GPT2.from_pretrained(folder).config) / 2e6:.1f}M matmul weights")
            for dtype in dtypes:
                run(folder, torch.device("cuda"), DTYPES[dtype], [(16, 1024)], ("sdpa", "eager"), args.repeats * 4,
                    float32_speed)
            return
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {cpu_description()}; "
              "ratio > 1 means minigpt_geom is faster")
        for dtype in dtypes:
            if dtype == "bfloat16" and args.dtype == "both":
                slowdown = bfloat16_matmul_slowdown()
                if slowdown > 2:
                    print(f"cpu  bfloat16: not measured (a bfloat16 matrix product is {slowdown:.0f}x slower than "
                          "float32 on this CPU: no native bfloat16 unit; --dtype bfloat16 forces it)", flush=True)
                    continue
            run(folder, torch.device("cpu"), DTYPES[dtype], [(1, 1024), (8, 128)], ("sdpa", "eager"), args.repeats,
                float32_speed)


if __name__ == "__main__":
    main()
