"""Edits (model/edits.py): a full residual patching sweep as one batched pass against TransformerLens's serial
`get_act_patch_resid_pre`, and the unedited forward pass against the tree before edits existed.

    python bench/edits.py                         # CPU, 124M shape: the sweep, 12 layers x 16 positions
    python bench/edits.py --before /tmp/before    # also the unedited forward, this tree against an older one
                                                  # (git archive COMMIT | tar -x -C /tmp/before)
    python bench/edits.py --gpu                   # CUDA ("not measured" without it)

Each contender runs in its own fresh process on the same random 124M-shape weights and the same prompts; its
time is the best of --repeats sweeps, its peak the process's high-water mark of resident memory (VmHWM, CPU) or
torch's peak allocation (CUDA) above what it held before the sweep. TransformerLens (the `lens` extra) runs its
own helper: one forward pass per (layer, position); ours patches all 192 copies in one pass, one Set per layer.
Both compute the same logit difference (the tests hold them to 1e-5 on a small model; here the largest
difference is printed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import gpu_or_not_measured, interleaved_seconds, random_checkpoint, timed  # noqa: E402
from load import current_rss, peak_rss, reset_peak_rss  # noqa: E402

LAYERS, POSITIONS, ANSWER, WRONG = 12, 16, 262, 995


def prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """A clean and a corrupted prompt of 16 tokens, differing in a few positions."""
    clean = torch.randint(0, 50257, (1, POSITIONS), generator=torch.Generator().manual_seed(0))
    corrupt = clean.clone()
    corrupt[0, [3, 9, 14]] = torch.tensor([1000, 2000, 3000])
    return clean, corrupt


def ours_sweep(model, clean: torch.Tensor, corrupt: torch.Tensor) -> torch.Tensor:
    """[12, 16] logit differences, every (layer, position) patched in one pass of 192 copies."""
    from minigpt_geom import TraceRequest
    from minigpt_geom.model.edits import Set

    _, clean_trace = model(clean, trace=TraceRequest(capture=("resid_pre",)))
    copies = torch.arange(LAYERS * POSITIONS, device=clean.device).view(LAYERS, POSITIONS)
    positions = torch.arange(POSITIONS)
    edits = [Set("resid_pre", layer=layer, rows=copies[layer], positions=positions, source=clean_trace)
             for layer in range(LAYERS)]
    logits = model(corrupt.expand(LAYERS * POSITIONS, -1), edits=edits, last_only=True)[:, -1]
    return (logits[:, ANSWER] - logits[:, WRONG]).view(LAYERS, POSITIONS)


def lens_sweep(bridge, clean: torch.Tensor, corrupt: torch.Tensor) -> torch.Tensor:
    """TransformerLens's own helper: one forward pass per (layer, position)."""
    from transformer_lens import patching

    _, clean_cache = bridge.run_with_cache(clean)

    def metric(logits):
        return (logits[:, -1, ANSWER] - logits[:, -1, WRONG]).mean()

    return patching.get_act_patch_resid_pre(bridge, corrupt, clean_cache, metric)


def load_bridge(folder: str, device: str):
    """TransformerLens's bridge on a fresh copy of the weights, no processing (the weights as they are)."""
    import transformers
    from transformer_lens.model_bridge import TransformerBridge

    hf = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").to(device).eval()
    bridge = TransformerBridge.boot_transformers(folder, hf_model=hf, device=device)
    bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    return bridge


def child(contender: str, folder: str, device: str, repeats: int, out: str) -> None:
    """One contender's sweep, `repeats` times in this process; its best time, peak and result to `out`."""
    torch.set_grad_enabled(False)
    clean, corrupt = (p.to(device) for p in prompts())
    if contender == "ours":
        from minigpt_geom import GPT2

        model = GPT2.from_pretrained(folder, device=device).eval()
        sweep = lambda: ours_sweep(model, clean, corrupt)  # noqa: E731
    else:
        bridge = load_bridge(folder, device)
        sweep = lambda: lens_sweep(bridge, clean, corrupt)  # noqa: E731
    sweep()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    reset_peak_rss()
    rss = current_rss()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = sweep()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() - baseline if device == "cuda" else peak_rss() - rss
    torch.save(result.float().cpu(), out)
    print(json.dumps({"seconds": min(seconds), "peak": peak}))


def run_child(contender: str, folder: Path, device: str, repeats: int) -> tuple[dict, torch.Tensor | None]:
    """A contender in a fresh process: ({seconds, peak}, its [12, 16] result), or ({"error": ...}, None)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.pt"
        done = subprocess.run([sys.executable, __file__, "--child", contender, str(folder), "--device", device,
                               "--repeats", str(repeats), "--out", str(out)], capture_output=True, text=True)
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}, None
        return json.loads(done.stdout.strip().splitlines()[-1]), torch.load(out, weights_only=True)


def sweep_row(folder: Path, device: str, repeats: int) -> None:
    """Ours and TransformerLens's sweep: time, tokens/s, peak memory, speed-up, agreement."""
    ours, ours_result = run_child("ours", folder, device, repeats)
    if ours_result is None:
        print(f"{device} sweep: ours failed: {ours['error']}")
        return
    tokens = LAYERS * POSITIONS * POSITIONS
    print(f"{device} residual patching sweep {LAYERS} layers x {POSITIONS} positions ({LAYERS * POSITIONS} "
          f"patched copies, one pass): ours {ours['seconds'] * 1e3:8.1f} ms ({tokens / ours['seconds']:,.0f} tok/s), "
          f"peak +{ours['peak'] / 2**20:.0f} MiB", flush=True)
    try:
        import transformer_lens  # noqa: F401
    except ImportError:
        print(f"{device} TransformerLens get_act_patch_resid_pre: not measured (transformer-lens not importable; "
              "the `lens` extra)")
        return
    lens, lens_result = run_child("lens", folder, device, repeats)
    if lens_result is None:
        print(f"{device} TransformerLens get_act_patch_resid_pre: failed: {lens['error']}")
        return
    print(f"{device} TransformerLens get_act_patch_resid_pre ({LAYERS * POSITIONS} passes): "
          f"{lens['seconds'] * 1e3:8.1f} ms ({tokens / lens['seconds']:,.0f} tok/s), peak +{lens['peak'] / 2**20:.0f} "
          f"MiB   ours {lens['seconds'] / ours['seconds']:.1f}x faster   max |Δ metric| "
          f"{(ours_result - lens_result).abs().max().item():.1e}", flush=True)


def unedited_row(folder: Path, before: Path, repeats: int) -> None:
    """The unedited forward pass (untraced, and traced with summaries) of this tree and of `before`, in turn."""
    import importlib
    import shutil

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(before / "minigpt_geom", Path(tmp) / "minigpt_geom_before")
        sys.path.insert(0, tmp)
        old = importlib.import_module("minigpt_geom_before").GPT2.from_pretrained(folder).eval()
        from minigpt_geom import GPT2

        new = GPT2.from_pretrained(folder).eval()
        cpu = torch.device("cpu")
        for B, T in ((1, 256), (8, 128)):
            idx = torch.randint(0, 50257, (B, T), generator=torch.Generator().manual_seed(1))
            for trace in (None, True):
                seconds = interleaved_seconds({"before": timed(lambda: old(idx, trace=trace), cpu),
                                               "after": timed(lambda: new(idx, trace=trace), cpu)}, repeats)
                print(f"cpu unedited forward {B}x{T:<4d} {'traced ' if trace else 'untraced'}: before "
                      f"{B * T / seconds['before']:6.0f} tok/s, after {B * T / seconds['after']:6.0f} tok/s "
                      f"(after/before {seconds['before'] / seconds['after']:4.2f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--checkpoint", type=Path, help="folder for the random 124M-shape checkpoint (default: temp)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="a tree (with minigpt_geom/) to time the unedited forward against")
    parser.add_argument("--gpu", action="store_true", help="CUDA instead of the CPU")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("folder", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.folder, args.device, args.repeats, args.out)
        return
    if args.gpu and not gpu_or_not_measured("bench/edits.py"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = random_checkpoint(args.checkpoint or Path(tmp))
        print(f"torch {torch.__version__}, {'cuda' if args.gpu else f'{torch.get_num_threads()} CPU threads'}",
              flush=True)
        sweep_row(folder, "cuda" if args.gpu else "cpu", args.repeats)
        if args.before and not args.gpu:
            unedited_row(folder, args.before, max(args.repeats, 5))


if __name__ == "__main__":
    main()
