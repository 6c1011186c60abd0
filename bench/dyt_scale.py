"""Why DyT stalls with GPT-2's tied unembedding, and what ln_f's starting γ does: short runs of `minigpt-geom train`
on one token folder, each start measured afterwards on held-out windows.

    python bench/dyt_scale.py TOKENS --tokenizer BPE [--steps 200] [--out DIR]

For each start (layer norm; DyT at α₀ = 0.5, 30; DyT at α₀ = 0.5 with --dyt-gamma 16, 32) it trains the same
4-layer, d = 128 model with the same batches, then prints the held-out loss, the mean ‖x_l‖ of the residual stream
at every layer (x₀ … x₄) and, for DyT, the share of tanh(αx) at each site's input beyond ±0.99 (saturated:
tanh′ < 0.02, where the gradient stops). The held-out unigram entropy is the bar a model that learned more than
word frequencies passes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minigpt_geom import GPT2
from minigpt_geom.model.trace import TraceRequest
from minigpt_geom.text.token_files import load_tokens
from minigpt_geom.training.collapse import unigram_entropy

STARTS = {  # name: the options of `train` that make it
    "layernorm": [],
    "dyt α₀ 0.5": ["--norm", "dyt"],
    "dyt α₀ 30": ["--norm", "dyt", "--dyt-alpha", "30"],
    "dyt γ_f 16": ["--norm", "dyt", "--dyt-gamma", "16"],
    "dyt γ_f 32": ["--norm", "dyt", "--dyt-gamma", "32"],
}
SATURATED = 0.99  # |tanh| beyond this: tanh′ = 1 − tanh² < 0.02


@torch.no_grad()
def measure(model: GPT2, ids: np.ndarray, windows: int, context: int) -> tuple[float, list[float], list[float]]:
    """(held-out loss, mean ‖x_l‖ for l = 0 … L, saturated share at each DyT site's input) on `windows` windows."""
    starts = np.linspace(0, len(ids) - context - 1, windows).astype(np.int64)
    x = torch.from_numpy(np.stack([ids[s:s + context] for s in starts]).astype(np.int64))
    y = torch.from_numpy(np.stack([ids[s + 1:s + context + 1] for s in starts]).astype(np.int64))
    logits, trace = model.eval()(x, trace=TraceRequest(states=True))
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
    norms = trace.states.norm(dim=-1).mean(dim=(1, 2)).tolist()
    inputs = {f"h.{i}.ln_1": trace.states[i] for i in range(model.config.n_layer)} | {"ln_f": trace.states[-1]}
    saturated = [(torch.tanh(site.alpha * inputs[name]).abs() > SATURATED).float().mean().item()
                 for name, site in model.norm_sites().items() if name in inputs and site.variant.name == "dyt"]
    return loss, norms, saturated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tokens", help="a token folder made by `minigpt-geom prepare`")
    parser.add_argument("--tokenizer", required=True, help="its tokenizer (vocab.json, merges.txt)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--windows", type=int, default=64, help="held-out windows measured")
    parser.add_argument("--out", help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    val = load_tokens(args.tokens).val
    print(f"held-out unigram entropy {unigram_entropy(val):.3f} nats; {args.steps} steps a run\n")
    print(f"{'start':<12} {'held-out':>8}  {'‖x_l‖, l = 0 … 4':<28} saturated at h.0.ln_1 … ln_f")
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out or scratch)
        for name, options in STARTS.items():
            folder = out / name.replace(" ", "-").replace("₀", "0").replace("γ_f", "gamma").replace("α", "alpha")
            subprocess.run([sys.executable, "-m", "minigpt_geom", "train", args.tokens, "-o", str(folder),
                            "--tokenizer", args.tokenizer, "--n-layer", "4", "--n-head", "4", "--n-embd", "128",
                            "--n-ctx", "128", "--steps", str(args.steps), "--warmup", str(args.steps // 10),
                            "--lr", "1e-3", "--batch-size", "16", "--eval-interval", str(args.steps),
                            "--sample-tokens", "0", "--quiet", "--overwrite", *options],
                           check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
            loss, norms, saturated = measure(GPT2.from_pretrained(folder), val, args.windows, 128)
            print(f"{name:<12} {loss:8.3f}  {' '.join(f'{n:5.1f}' for n in norms):<28} "
                  f"{' '.join(f'{s:.2f}' for s in saturated) or '-'}", flush=True)


if __name__ == "__main__":
    main()
