"""Training-step throughput (forward, backward, AdamW) of minigpt_geom against transformers' GPT2LMHeadModel.

    python bench/train.py                  # CPU float32, 124M shape, 4 x 128 tokens a step
    python bench/train.py --gpu            # adds CUDA bfloat16 autocast at 16 x 1024, with MFU

Both models start from the same random weights, take the same batch, compute the same loss from their logits
and step an identical AdamW; the two are timed alternately (medians). MFU = 6·N·tokens/s / peak, N the number
of parameters (the tied embedding counted once): the usual estimate of a step's FLOPs, attention left out.
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
from minigpt_geom.training.loop import Logits, next_token_loss  # noqa: E402


class LogitsOnly(torch.nn.Module):
    """transformers' model seen as ids -> logits, so both models share next_token_loss."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx, use_cache=False).logits


def training_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: bool):
    """A callable doing one full step: forward, loss, backward, AdamW, zeroing the gradients."""
    fused = x.device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1, fused=fused or None)

    def step() -> None:
        with torch.autocast(x.device.type, torch.bfloat16, enabled=autocast):
            loss = next_token_loss(model, x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if x.device.type == "cuda":
            torch.cuda.synchronize()

    return step


def measure(folder: Path, device: torch.device, B: int, T: int, repeats: int, autocast: bool,
            compile: bool = False) -> None:
    """Print tokens/s of both models on one shape, their ratio and (on a GPU) their MFU."""
    from transformers import GPT2LMHeadModel

    ours = Logits(GPT2.from_pretrained(folder, device=device)).train()  # the forward pass train() runs
    theirs = LogitsOnly(GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="sdpa").to(device)).train()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, ours.model.config.vocab_size, (B, T + 1), generator=generator)
    if compile:
        ours, theirs = torch.compile(ours), torch.compile(theirs)
    x, y = ids[:, :-1].to(device), ids[:, 1:].to(device)
    seconds = interleaved_seconds({"ours": training_step(ours, x, y, autocast),
                                   "theirs": training_step(theirs, x, y, autocast)}, repeats)
    n_params = sum(p.numel() for p in ours.parameters())
    ours_tps, theirs_tps = (B * T / seconds[name] for name in ("ours", "theirs"))
    dtype = "bf16 autocast" if autocast else "float32"
    line = (f"{device.type:4s} {dtype:13s} {B:>2}x{T:<5}{' compiled' if compile else ''}  "
            f"ours {ours_tps:9,.0f} tok/s   HF {theirs_tps:9,.0f} tok/s   ratio {ours_tps / theirs_tps:5.2f}")
    if device.type == "cuda":
        peak = gpu_peak_flops(torch.bfloat16 if autocast else torch.float32)
        if peak:
            line += f"   MFU ours {6 * n_params * ours_tps / peak:6.1%}   HF {6 * n_params * theirs_tps / peak:6.1%}"
        else:
            line += f"   MFU not measured (unknown peak of {torch.cuda.get_device_name()})"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--checkpoint", type=Path, help="folder to write/read the random checkpoint (default: temp)")
    parser.add_argument("--batch", type=int, default=4, help="CPU batch (default: 4)")
    parser.add_argument("--context", type=int, default=128, help="CPU window length (default: 128)")
    parser.add_argument("--n-layer", type=int, default=12)
    parser.add_argument("--n-embd", type=int, default=768)
    parser.add_argument("--n-head", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu", action="store_true", help="also bfloat16 autocast at 16 x 1024 on CUDA, with MFU")
    parser.add_argument("--compile", action="store_true", help="on the GPU, also time both under torch.compile")
    args = parser.parse_args()
    shape = dict(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, n_positions=1024,
                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # no dropout: ours has none
    with tempfile.TemporaryDirectory() as tmp:
        folder = random_checkpoint(args.checkpoint or Path(tmp), **shape)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
              f"{args.n_layer} layers, d = {args.n_embd}; ratio > 1 means minigpt_geom is faster", flush=True)
        measure(folder, torch.device("cpu"), args.batch, args.context, args.repeats, autocast=False)
        if not args.gpu:
            return
        if not torch.cuda.is_available():
            print("cuda bf16 autocast: not measured (no CUDA device)")
            return
        measure(folder, torch.device("cuda"), 16, 1024, args.repeats * 4, autocast=True)
        if args.compile:
            measure(folder, torch.device("cuda"), 16, 1024, args.repeats * 4, autocast=True, compile=True)


if __name__ == "__main__":
    main()
