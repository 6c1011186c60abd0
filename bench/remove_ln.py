"""Removing layer norm from a small trained GPT-2: the validation loss before, right after, and after fine-tuning.

    python bench/remove_ln.py                      # 4 layers, d = 128: the model of bench/norm_variants.py
    python bench/remove_ln.py --finetune-steps 100 # a quicker look

The layer-norm model is the one bench/norm_variants.py trained (its checkpoint in --cache is reused, else it
is trained here with the same settings). Then: every site fixed at once at its calibrated σ, no training
(what folding layer norm away costs by itself); the same fine-tune with layer norm kept (the control: a
short first training leaves room to improve either way); and `remove_layer_norm`, the sites switched one after
another while fine-tuning on the same data. Losses are on the same held-out windows.
"""

from __future__ import annotations

import argparse
import copy
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from norm_variants import token_data, vocabulary

from minigpt_geom import GPT2, GPT2Config
from minigpt_geom.training.distributed import ALONE
from minigpt_geom.model.lnfree import fix_sigma
from minigpt_geom.training.remove_ln import calibrate_sigma
from minigpt_geom.training.remove_ln import calibration_batch, control_run, remove_layer_norm
from minigpt_geom.text.tokenizer import Tokenizer
from minigpt_geom.training.loop import NextTokenLoss, TrainSettings, evaluate, train


def validation_loss(model, data, context: int) -> float:
    """Mean next-token cross-entropy on 64 held-out windows (the ones train() evaluates on)."""
    return evaluate(NextTokenLoss(model), data.val, context, 64, 8, ALONE, nullcontext())[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--steps", type=int, default=300, help="training steps of the layer-norm model (default 300)")
    parser.add_argument("--finetune-steps", type=int, default=300, help="steps of the removal (default 300)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows of 128 tokens a step (default 8)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the first training (default 2e-3)")
    parser.add_argument("--finetune-lr", type=float, default=6e-4, help="peak learning rate of the removal (default 6e-4)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "minigpt_geom" / "norm_variants")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary(args.cache, 1000, sample_bytes=400_000)
    data = token_data(args.cache, vocab, None)
    config = GPT2Config(n_layer=4, n_head=4, n_embd=128, n_ctx=128, vocab_size=Tokenizer.from_pretrained(vocab).n_vocab)

    trained = args.cache / "runs" / "layernorm"
    if (trained / "model.safetensors").is_file():
        print(f"layer-norm model: {trained} (trained by bench/norm_variants.py)", flush=True)
        model = GPT2.from_pretrained(trained)
    else:
        model = GPT2(config)
        settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                                 warmup_steps=max(args.steps // 20, 1), eval_interval=args.steps, eval_windows=64,
                                 sample_tokens=0)
        train(model, data, vocab, trained, settings)
    with torch.no_grad():
        ln_loss = validation_loss(model, data, config.n_ctx)
        at_once = copy.deepcopy(model)
        scales = calibrate_sigma(at_once, [calibration_batch(data, config.n_ctx, step, 0, torch.device("cpu"))
                                           for step in range(4)])
        for site, (sigma, _) in scales.items():
            fix_sigma(at_once, site, sigma)
        folded_loss = validation_loss(at_once, data, config.n_ctx)

    settings = TrainSettings(steps=args.finetune_steps, batch_size=args.batch_size, learning_rate=args.finetune_lr,
                             warmup_steps=max(args.finetune_steps // 20, 1), eval_interval=args.finetune_steps,
                             eval_windows=64, sample_tokens=0)
    vanilla = copy.deepcopy(model).train()  # the control: the same fine-tune with layer norm kept
    runs = args.cache / "runs" / "layernorm-removed"
    control_run(vanilla, data, vocab, runs, settings, overwrite=True)
    vanilla_loss = validation_loss(vanilla, data, config.n_ctx)
    began = time.perf_counter()
    remove_layer_norm(model.train(), data, vocab, runs, settings, overwrite=True)
    seconds = time.perf_counter() - began
    removed_loss = validation_loss(model, data, config.n_ctx)
    tokens = args.finetune_steps * args.batch_size * config.n_ctx
    print("\n| model | validation loss | vs layer norm |\n|---|---|---|")
    print(f"| layer norm ({config.n_layer} layers, d = {config.n_embd}) | {ln_loss:.4f} | |")
    print(f"| every site fixed at its calibrated σ, no fine-tuning | {folded_loss:.4f} | {folded_loss - ln_loss:+.4f} |")
    print(f"| layer norm kept, the same {args.finetune_steps} fine-tuning steps (control) | {vanilla_loss:.4f} | "
          f"{vanilla_loss - ln_loss:+.4f} |")
    print(f"| remove-ln, {args.finetune_steps} steps = {tokens:,} tokens ({seconds:.0f} s) | {removed_loss:.4f} | "
          f"{removed_loss - ln_loss:+.4f} |")


if __name__ == "__main__":
    main()
