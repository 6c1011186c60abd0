"""`minigpt-geom train CORPUS -o DIR`: train a new GPT-2 or fine-tune one, with any norm variant.

On many processes: `torchrun --nproc_per_node N -m minigpt_geom train …` (the same global batch)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..errors import InputError
from . import DTYPES, add_command, add_quiet_argument, positive_int, processes_for, show_progress
from .init import add_architecture_arguments, new_model_from_arguments, wants_new_model
from .prepare import add_corpus_arguments

if TYPE_CHECKING:
    from ..train import TrainSettings

SUMMARY = "train or fine-tune a GPT-2 on a text corpus"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `train` subcommand."""
    parser = add_command(subparsers, "train", SUMMARY,
                         __doc__.split(":", 1)[1].strip())
    parser.add_argument("corpus", help="a text file, a folder of them, or a folder `prepare` wrote")
    parser.add_argument("-o", "--out", required=True, metavar="DIR",
                        help="folder for the checkpoint, log.csv and the optimiser state")
    model = parser.add_argument_group("the model")
    model.add_argument("--weights", default=None, metavar="SOURCE",
                       help="fine-tune these weights (preset, hub id, directory or .safetensors file)")
    model.add_argument("--tokenizer", default=None, metavar="SOURCE",
                       help="where vocab.json and merges.txt are (default: the weights source; required for a new model)")
    model.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    add_architecture_arguments(parser, fine_tune=True)
    add_run_arguments(parser)
    data = parser.add_argument_group("the corpus")
    add_corpus_arguments(data)
    data.add_argument("--data-cache", default=None, metavar="DIR",
                      help="where token files of a corpus are cached (default: ~/.cache/minigpt_geom/tokens)")
    return parser


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a run (steps, batch, learning rate, evaluation, device), shared with `remove-ln`."""
    from ..train import TrainSettings

    default = TrainSettings()
    run = parser.add_argument_group("the run")
    run.add_argument("--steps", type=int, default=default.steps, help=f"optimiser steps (default: {default.steps})")
    run.add_argument("--batch-size", type=positive_int, default=default.batch_size, metavar="N",
                     help=f"windows per step, all processes together (default: {default.batch_size})")
    run.add_argument("--micro-batch", type=positive_int, default=None, metavar="N",
                     help="windows per forward pass of one process; the rest is gradient accumulation")
    run.add_argument("--context", type=positive_int, default=None, metavar="T",
                     help="window length in tokens (default: the model's context)")
    run.add_argument("--lr", type=float, default=default.learning_rate, help=f"peak learning rate (default: {default.learning_rate})")
    run.add_argument("--min-lr", type=float, default=None, help="final learning rate (default: lr/10)")
    run.add_argument("--warmup", type=int, default=default.warmup_steps, metavar="STEPS",
                     help=f"linear warm-up steps (default: {default.warmup_steps})")
    run.add_argument("--weight-decay", type=float, default=default.weight_decay,
                     help=f"AdamW weight decay of the matrices (default: {default.weight_decay})")
    run.add_argument("--grad-clip", type=float, default=default.grad_clip,
                     help=f"largest gradient norm, 0 for none (default: {default.grad_clip})")
    run.add_argument("--eval-interval", type=positive_int, default=default.eval_interval, metavar="STEPS",
                     help=f"evaluate, sample and save every this many steps (default: {default.eval_interval})")
    run.add_argument("--eval-windows", type=positive_int, default=default.eval_windows, metavar="N",
                     help=f"held-out windows per evaluation (default: {default.eval_windows})")
    run.add_argument("--sample-tokens", type=int, default=default.sample_tokens, metavar="N",
                     help=f"length of the sample at each evaluation, 0 for none (default: {default.sample_tokens})")
    run.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                     help="end after this step, saving a checkpoint to --resume from (the schedule still spans --steps)")
    run.add_argument("--device", default="cpu", help="torch device; under torchrun, cuda uses cuda:LOCAL_RANK (default: cpu)")
    run.add_argument("--dtype", choices=DTYPES, default=None,
                     help="bfloat16 autocasts the forward pass; float16 is refused (it needs loss scaling) "
                          "(default: bfloat16 on CUDA, else float32)")
    run.add_argument("--compile", action="store_true", help="torch.compile the training step (faster on GPUs)")
    add_quiet_argument(run)


def build_model(args: argparse.Namespace):
    """(model, tokenizer source): the run saved in --out, the weights given, or a new model."""
    from ..export import load_model
    from ..model import GPT2
    from ..tokenizer import Tokenizer

    new = wants_new_model(args)
    if args.resume:
        if args.weights or new or args.norm:
            raise InputError("--resume continues the model saved in --out: drop --weights, --init, the sizes and --norm")
        return load_model(args.out), args.tokenizer or args.out
    if args.weights and new:
        raise InputError("give --weights to fine-tune or --init/--n-layer … for a new model, not both")
    if args.weights:
        model = GPT2.from_pretrained(args.weights)
        return (model.set_norm(args.norm) if args.norm else model), args.tokenizer or args.weights
    if not new:
        raise InputError("give --weights SOURCE to fine-tune, or --init PRESET / --n-layer … to train a new model")
    if args.tokenizer is None:
        raise InputError("a new model needs --tokenizer SOURCE (a folder with vocab.json and merges.txt)")
    return new_model_from_arguments(args, Tokenizer.from_pretrained(args.tokenizer).n_vocab), args.tokenizer


def settings_from_arguments(args: argparse.Namespace) -> "TrainSettings":
    """The TrainSettings the run options name."""
    from ..train import TrainSettings

    if args.dtype == "float16":
        raise InputError("--dtype float16 cannot train without loss scaling: use bfloat16 (or float32)")
    return TrainSettings(
        steps=args.steps, batch_size=args.batch_size, micro_batch=args.micro_batch, context=args.context,
        learning_rate=args.lr, min_learning_rate=args.min_lr, warmup_steps=args.warmup,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, seed=args.seed, eval_interval=args.eval_interval,
        eval_windows=args.eval_windows, sample_tokens=args.sample_tokens, dtype=args.dtype or "auto", stop_at=args.stop_at,
        compile=args.compile,
    )


def run(args: argparse.Namespace) -> int:
    """Train; under torchrun every process runs this and rank 0 writes the files."""
    from ..train import load_corpus, train

    settings = settings_from_arguments(args)
    with processes_for(args) as processes:
        model, tokenizer_source = build_model(args)
        data = load_corpus(args.corpus, tokenizer_source, processes, val_fraction=args.val_fraction,
                           pattern=args.pattern, cache_dir=args.data_cache, progress=show_progress(args))
        log = train(model, data, tokenizer_source, args.out, settings, device=processes.device, resume=args.resume,
                    progress=show_progress(args))
    if processes.main:
        print(f"step {log[-1].step}: validation loss {log[-1].val_loss:.4f}; saved in {args.out}")
    return 0
