"""`minigpt-geom remove-ln CORPUS --weights SOURCE -o DIR`: fine-tune a GPT-2 until it needs no layer norm.

The sites switch to a fixed σ one after another (every ln_2, every ln_1, then ln_f, between 10 % and 60 % of
the steps), training goes on throughout, and DIR receives a checkpoint with layer norm switched off inside
(ε = 1e12, as the published LN-free GPT-2s): transformers runs it unchanged, `--weights DIR` loads it here as an
exact norm="none" model. The run itself (for --resume) is kept in DIR/run."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import add_command, processes_for, show_progress
from .prepare import add_corpus_arguments
from .train import add_run_arguments, settings_from_arguments

SUMMARY = "fine-tune a GPT-2 until it needs no layer norm"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `remove-ln` subcommand."""
    parser = add_command(subparsers, "remove-ln", SUMMARY,
                         __doc__.split(":", 1)[1].strip())
    parser.add_argument("corpus", help="a text file, a folder of them, or a folder `prepare` wrote")
    parser.add_argument("--weights", required=True, metavar="SOURCE",
                        help="the model to take layer norm out of (preset, hub id, directory or .safetensors file)")
    parser.add_argument("-o", "--out", required=True, type=Path, metavar="DIR",
                        help="folder for the LN-free checkpoint (the run's own files go into DIR/run)")
    parser.add_argument("--tokenizer", default=None, metavar="SOURCE",
                        help="where vocab.json and merges.txt are (default: the weights source)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in DIR/run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batches and calibration windows (default: 0)")
    add_run_arguments(parser)
    add_corpus_arguments(parser.add_argument_group("the corpus"))
    return parser


def run(args: argparse.Namespace) -> int:
    """Remove layer norm; under torchrun every process runs this and rank 0 writes the files."""
    from ..export import load_model
    from ..model import GPT2
    from ..remove_ln import remove_layer_norm
    from ..train import load_corpus

    settings = settings_from_arguments(args)
    tokenizer = args.tokenizer or args.weights
    with processes_for(args) as processes:
        model = load_model(args.out / "run") if args.resume else GPT2.from_pretrained(args.weights)
        data = load_corpus(args.corpus, tokenizer, processes, val_fraction=args.val_fraction,
                           pattern=args.pattern, progress=show_progress(args))
        log = remove_layer_norm(model, data, tokenizer, args.out, settings, device=processes.device,
                                resume=args.resume, progress=show_progress(args))
    if processes.main:
        print(f"step {log[-1].step}: validation loss {log[-1].val_loss:.4f} without layer norm; saved in {args.out}")
    return 0
