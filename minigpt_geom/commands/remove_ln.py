"""`minigpt-geom remove-ln CORPUS --weights SOURCE -o DIR`: fine-tune a GPT-2 until it needs no layer norm.

The sites switch to a fixed σ one after another (every ln_2, every ln_1, then ln_f, between 10 % and 60 % of
the steps), training goes on throughout, and DIR receives a checkpoint with layer norm switched off inside
(ε = 1e12, as the published LN-free GPT-2s): transformers runs it unchanged, `--weights DIR` loads it here as an
exact norm="none" model. The run itself (for --resume) is kept in DIR/run, with sigma.csv, the σ fixed at each
site and step. --control also fine-tunes the weights as long with layer norm kept (in DIR/control) and prints
both validation losses, so the cost of removing layer norm can be told from the gain of more training."""

from __future__ import annotations

import argparse
from functools import partial

from ..errors import InputError
from .arguments import add_command, folder_path, path_text, seed
from .loading import processes_for
from .outputs import output_folder, show_progress
from .prepare import add_corpus_arguments, corpus_options, corpus_settings
from .train import (add_run_arguments, check_outside, continuation, one_line_warnings, options_named, resume_hint,
                    settings_from_arguments)

SUMMARY = "fine-tune a GPT-2 until it needs no layer norm"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `remove-ln` subcommand."""
    parser = add_command(subparsers, "remove-ln", SUMMARY,
                         __doc__.split(":", 1)[1].strip())
    parser.add_argument("corpus", type=path_text, help="a text file, a folder of them, or a folder `prepare` wrote")
    parser.add_argument("--weights", required=True, type=path_text, metavar="SOURCE",
                        help="the model to take layer norm out of (preset, hub id, directory or .safetensors file)")
    parser.add_argument("-o", "--out", required=True, type=folder_path, metavar="DIR",
                        help="folder for the LN-free checkpoint (the run's own files go into DIR/run)")
    parser.add_argument("--tokenizer", default=None, type=path_text, metavar="SOURCE",
                        help="where vocab.json and merges.txt are (default: the weights source)")
    parser.add_argument("--seed", type=seed, default=None, help="seed of the batches and calibration windows (default: 0)")
    parser.add_argument("--control", action="store_true",
                        help="also fine-tune with layer norm kept (DIR/control) and print both losses")
    add_run_arguments(parser)
    add_corpus_arguments(parser.add_argument_group("the corpus"))
    return parser


def run(args: argparse.Namespace) -> int:
    """Remove layer norm; under torchrun every process runs this and rank 0 writes the files."""
    from ..training.run_folder import check_new_output
    from ..model.gpt2 import GPT2
    from ..training.remove_ln import check_removable, check_steps, control_run, remove_layer_norm
    from ..training.loop import load_corpus

    if args.resume and args.overwrite:
        raise InputError("--resume continues the run in DIR/run, --overwrite starts it again: give one")
    run_args = argparse.Namespace(**{**vars(args), "out": args.out / "run"})  # the saved settings are the run's
    settings = settings_from_arguments(run_args)
    with options_named():
        check_steps(settings)
    check_outside(args.corpus, args.out)
    check_new_output(output_folder(args.out), resume=args.resume, overwrite=args.overwrite)  # before any work
    tokenizer = args.tokenizer or args.weights
    advice = partial(continuation, args, args.out / "run", "weights")  # what to do when a rank is lost
    with processes_for(args, advice) as processes, options_named(), one_line_warnings(args.command):
        model = GPT2.from_pretrained(args.out / "run") if args.resume else GPT2.from_pretrained(args.weights)
        check_removable(model)
        with corpus_options():
            data = load_corpus(args.corpus, tokenizer, processes, exclude=[args.out], progress=show_progress(args),
                               **corpus_settings(args))
        options = dict(device=processes.device, resume=args.resume, overwrite=args.overwrite,
                       progress=show_progress(args))
        with resume_hint(args, args.out / "run", processes.main, "weights"):
            log = remove_layer_norm(model, data, tokenizer, args.out, settings, **options)
        control = None
        if args.control:  # the same weights, the same batches, layer norm kept
            start = args.out / "control" if args.resume else args.weights
            control = control_run(GPT2.from_pretrained(start), data, tokenizer, args.out, settings, **options)
    if processes.main:
        print(f"step {log[-1].step}: validation loss {log[-1].val_loss:.4f} without layer norm; saved in {args.out}")
        if control:
            print(f"step {control[-1].step}: validation loss {control[-1].val_loss:.4f} with layer norm kept "
                  f"(the control run, {args.out / 'control'}); removing it cost "
                  f"{log[-1].val_loss - control[-1].val_loss:+.4f} nats")
    return 0
