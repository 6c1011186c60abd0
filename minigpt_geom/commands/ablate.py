"""`minigpt-geom ablate "text"`: every head zero-, mean- or resample-ablated, the change in loss or metric."""

from __future__ import annotations

import argparse

from .arguments import (add_batch_argument, add_command, add_contrast_arguments, add_experiment_outputs,
                        add_model_arguments, add_text_argument, seed)
from .loading import load_model_and_tokenizer
from .outputs import output_folder, progress_bar, require_matplotlib, write_experiment

SUMMARY = "head ablation: each head's output zeroed, averaged or resampled, and what the model loses"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `ablate` subcommand."""
    parser = add_command(
        subparsers, "ablate", SUMMARY,
        "Replace one head's output (before W_O, every position) by zero, by its mean over the reference texts at each "
        "position, or by its output on one of them drawn at random (resample), for every head in turn, all in a few "
        "batched forward passes. Measures the text's next-token loss, or with --answer the metric of the answer "
        "at the last position. Prints the change per head; writes ablate.csv and the map ablate.FORMAT.")
    add_text_argument(parser)
    add_model_arguments(parser)
    parser.add_argument("--method", default="zero", choices=("zero", "mean", "resample"),
                        help="what replaces a head's output (default: zero)")
    parser.add_argument("--reference", nargs="+", metavar="TEXT",
                        help="the reference texts of mean and resample, each the same number of tokens as the text")
    parser.add_argument("--seed", type=seed, default=0, help="which reference text each resampled head reads "
                                                             "(default: 0)")
    add_contrast_arguments(parser, answer="none: the next-token loss over the text is measured",
                           wrong="the second most likely next word")
    add_batch_argument(parser)
    add_experiment_outputs(parser, "ablate")
    return parser


def run(args: argparse.Namespace) -> int:
    """Ablate every head, print the matrix, write the CSV and the map."""
    from ..analysis.ablation import ablation_matrix, ablation_rows, text_ablation

    require_matplotlib(args)
    out = output_folder(args.out)
    with progress_bar(args, 2, "ablate", unit="pass") as bar:
        model, tokenizer = load_model_and_tokenizer(args)
        result = text_ablation(model, tokenizer, args.text, method=args.method, reference=args.reference,
                               answer=args.answer, wrong=args.wrong, metric=args.metric, seed=args.seed,
                               rows_per_pass=args.batch_size, progress=bar)
    print(f"{result.passes} forward passes")
    return write_experiment(args, out, "ablate", ablation_matrix(result), ablation_rows(result),
                            "ablation_figure", result)
