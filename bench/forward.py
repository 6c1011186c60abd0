"""Forward-pass throughput of minigpt_geom against transformers on the same 124M-shape weights.

    python bench/forward.py            # CPU float32 at 1x1024 and 8x128
    python bench/forward.py --gpu      # adds float32 and bfloat16 at 16x1024 on CUDA, with MFU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import gpu_peak_flops, interleaved_seconds, random_checkpoint  # noqa: E402

from minigpt_geom import GPT2  # noqa: E402


def forward_flops(config, B: int, T: int) -> float:
    """Model FLOPs of one forward pass: 2·params·tokens for the matmuls + attention's 2·(QKᵀ and AV)."""
    d, L = config.n_embd, config.n_layer
    matmul_params = L * 12 * d * d + config.vocab_size * d  # qkv, proj, mlp (4d·d twice), unembedding
    attention = L * 2 * 2 * T * T * d  # scores and weighted values over all T² pairs (as MFU convention counts)
    return B * (2 * T * matmul_params + attention)


def load_hf(folder: Path, attn: str, device, dtype):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation=attn, dtype=dtype).to(device).eval()


def measure_pair(ours, theirs, idx, repeats: int, device) -> tuple[float, float]:
    """Tokens per second of each model on idx, timed alternately."""
    def forward(model):
        def call():
            with torch.inference_mode():
                model(idx)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return call
    seconds = interleaved_seconds({"ours": forward(ours), "theirs": forward(theirs)}, repeats)
    return idx.numel() / seconds["ours"], idx.numel() / seconds["theirs"]


def run(folder: Path, device: torch.device, dtype: torch.dtype, shapes, repeats: int) -> None:
    ours = GPT2.from_pretrained(folder, device=device, dtype=dtype)
    peak = gpu_peak_flops(dtype) if device.type == "cuda" else None
    for attn in ("sdpa", "eager"):
        theirs = load_hf(folder, attn, device, dtype)
        for B, T in shapes:
            idx = torch.randint(0, ours.config.vocab_size, (B, T), device=device)
            ours_tps, theirs_tps = measure_pair(ours, theirs, idx, repeats, device)
            line = (f"{device.type:4s} {str(dtype).removeprefix('torch.'):8s} {B:>2}x{T:<5} vs HF {attn:5s} "
                    f"ours {ours_tps:10,.0f} tok/s   HF {theirs_tps:10,.0f} tok/s   ratio {ours_tps / theirs_tps:5.2f}")
            if peak:
                line += f"   MFU ours {forward_flops(ours.config, B, T) * ours_tps / (B * T) / peak:6.1%}"
            print(line, flush=True)
        del theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="folder to write/read the random checkpoint (default: temp)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu", action="store_true", help="also run float32 and bfloat16 at 16x1024 on CUDA")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = random_checkpoint(args.checkpoint or Path(tmp))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; ratio > 1 means minigpt_geom is faster")
        run(folder, torch.device("cpu"), torch.float32, [(1, 1024), (8, 128)], args.repeats)
        if args.gpu and torch.cuda.is_available():
            for dtype in (torch.float32, torch.bfloat16):
                run(folder, torch.device("cuda"), dtype, [(16, 1024)], args.repeats * 4)


if __name__ == "__main__":
    main()
