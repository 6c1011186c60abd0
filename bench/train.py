"""Training-step throughput (forward, backward, AdamW) of minigpt_geom against transformers' GPT2LMHeadModel, and
the CPU and memory a step costs.

    python bench/train.py                  # CPU float32, 124M shape, 4 x 128 tokens a step
    python bench/train.py --gpu            # adds CUDA bfloat16 autocast at 16 x 1024, with MFU
    python bench/train.py --resources      # user and system CPU time, page faults and peak memory of train()'s
                                           # step, the loss chunked (now) and over the full logits (before)

Both models start from the same random weights, take the same batch, compute the same loss and step an identical
AdamW; the two are timed alternately (medians). MFU = 6·N·tokens/s / peak, N the number of parameters (the tied
embedding counted once): the usual estimate of a step's FLOPs, attention left out.

--resources runs training/loop.py's own train_step on the 4-layer, d = 128 model with GPT-2's 50257 words,
16 × 128 tokens a step, each configuration in a fresh process (peak RSS is per process): getrusage's user and
system seconds and minor page faults over --steps steps after two untimed ones, and ru_maxrss.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import gpu_peak_flops, interleaved_seconds, random_checkpoint  # noqa: E402

from minigpt_geom import GPT2, GPT2Config  # noqa: E402
from minigpt_geom.training.distributed import ALONE  # noqa: E402
from minigpt_geom.training.loop import NextTokenLoss, make_optimizer, train_step  # noqa: E402
from minigpt_geom.training.settings import TrainSettings  # noqa: E402

RESOURCE_SHAPE = GPT2Config(n_layer=4, n_head=4, n_embd=128, n_ctx=128, vocab_size=50257)  # 7.2 M parameters
RESOURCE_BATCH = 16  # windows of RESOURCE_SHAPE.n_ctx tokens a step


class HFLoss(torch.nn.Module):
    """transformers' model as (ids, next ids) -> the mean cross-entropy of its logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(x, use_cache=False).logits.flatten(0, 1).float(), y.flatten())


class FullLogitsLoss(torch.nn.Module):
    """The loss before issue 28: every logit [B, T, vocab] at once, then F.cross_entropy."""

    def __init__(self, model: GPT2) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(self.model.run(x).flatten(0, 1).float(), y.flatten(), reduction=reduction)


LOSSES = {"full logits": FullLogitsLoss, "chunked": NextTokenLoss}  # before issue 28, and now


def training_step(loss: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: bool):
    """A callable doing one full step: forward, loss, backward, AdamW, zeroing the gradients."""
    fused = x.device.type == "cuda"
    optimizer = torch.optim.AdamW(loss.parameters(), lr=1e-5, weight_decay=0.1, fused=fused or None)

    def step() -> None:
        with torch.autocast(x.device.type, torch.bfloat16, enabled=autocast):
            value = loss(x, y)
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if x.device.type == "cuda":
            torch.cuda.synchronize()

    return step


def measure(folder: Path, device: torch.device, B: int, T: int, repeats: int, autocast: bool,
            compile: bool = False) -> None:
    """Print tokens/s of both models on one shape, their ratio and (on a GPU) their MFU."""
    from transformers import GPT2LMHeadModel

    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # train()'s default; transformers' is 0.1
    model = GPT2.from_pretrained(folder, device=device)
    model.config = replace(model.config, dropout=0.0)
    ours = NextTokenLoss(model, compile).train()  # the loss train() computes
    theirs = HFLoss(GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="sdpa", **no_dropout)
                    .to(device)).train()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, ours.model.config.vocab_size, (B, T + 1), generator=generator)
    if compile:
        theirs = torch.compile(theirs)
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


def resource_child(loss_name: str, threads: int, steps: int) -> None:
    """In this (fresh) process: `steps` steps of train_step with one loss; print getrusage's figures as JSON."""
    import numpy as np

    torch.set_num_threads(threads)
    model = GPT2(RESOURCE_SHAPE)
    settings = TrainSettings(batch_size=RESOURCE_BATCH, context=RESOURCE_SHAPE.n_ctx)
    optimizer = make_optimizer(model, settings)
    loss = LOSSES[loss_name](model)
    ids = np.random.default_rng(0).integers(0, RESOURCE_SHAPE.vocab_size, 1_000_000).astype(np.uint16)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        starts = torch.randint(len(ids) - RESOURCE_SHAPE.n_ctx - 1, (1, RESOURCE_BATCH), generator=generator)
        train_step(loss, optimizer, ids, starts, RESOURCE_SHAPE.n_ctx, settings, ALONE, nullcontext())

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2):  # the optimiser's moments and the loss's buffer are made in the first step
        step()
    before, began = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - began
    print(json.dumps({"user": (after.ru_utime - before.ru_utime) / steps, "system": (after.ru_stime - before.ru_stime)
                      / steps, "faults": (after.ru_minflt - before.ru_minflt) / steps, "wall": wall / steps,
                      "rss_model": rss_before / 2**10, "rss_peak": after.ru_maxrss / 2**10}))


def measure_resources(steps: int, threads: list[int]) -> None:
    """Print, per loss and thread count, the per-step CPU seconds, page faults and the peak RSS (one process each)."""
    print(f"train_step, {RESOURCE_SHAPE.n_layer} layers, d = {RESOURCE_SHAPE.n_embd}, vocabulary "
          f"{RESOURCE_SHAPE.vocab_size}, {RESOURCE_BATCH} x {RESOURCE_SHAPE.n_ctx} tokens a step, {steps} steps; "
          f"per step:", flush=True)
    print(f"{'loss':12s} {'threads':>7s} {'user s':>7s} {'system s':>8s} {'sys/user':>8s} {'faults':>8s} "
          f"{'wall s':>7s} {'RSS MB before':>13s} {'peak RSS MB':>11s}", flush=True)
    for n in threads:
        for name in LOSSES:
            printed = subprocess.run([sys.executable, __file__, "--resource-child", name, "--threads", str(n),
                                      "--steps", str(steps)], capture_output=True, text=True, check=True).stdout
            r = json.loads(printed.splitlines()[-1])
            print(f"{name:12s} {n:>7d} {r['user']:7.3f} {r['system']:8.3f} {r['system'] / r['user']:8.1%} "
                  f"{r['faults']:8,.0f} {r['wall']:7.2f} {r['rss_model']:13,.0f} {r['rss_peak']:11,.0f}", flush=True)


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
    parser.add_argument("--resources", action="store_true", help="CPU time, page faults and peak RSS of a step, "
                        "the loss chunked and over the full logits")
    parser.add_argument("--steps", type=int, default=10, help="--resources: steps measured (default: 10)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="--resources: torch.set_num_threads values (default: 1 2)")
    parser.add_argument("--resource-child", choices=list(LOSSES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.resource_child:
        resource_child(args.resource_child, args.threads[0], args.steps)
        return
    if args.resources:
        measure_resources(args.steps, args.threads)
        return
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
