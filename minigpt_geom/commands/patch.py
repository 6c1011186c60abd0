"""`minigpt-geom patch CLEAN CORRUPT --answer W --wrong W`: activation patching over layers × positions or heads."""

from __future__ import annotations

import argparse

from .arguments import (add_batch_argument, add_command, add_contrast_arguments, add_experiment_outputs,
                        add_model_arguments)
from .loading import load_model_and_tokenizer
from .outputs import output_folder, progress_bar, require_matplotlib, write_experiment

SUMMARY = "activation patching: which layer and position (or head) carries a clean prompt's answer"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `patch` subcommand."""
    parser = add_command(
        subparsers, "patch", SUMMARY,
        "Run the clean prompt, then the corrupted one with one activation set back to its clean value, for every "
        "layer and position of the residual stream (--site resid_pre) or every layer and head (--site head_out), "
        "all in a few batched forward passes. Prints the metric normalised (0 = corrupted, 1 = clean) per layer; "
        "writes patch.csv (raw and normalised, full precision) and the map patch.FORMAT.")
    parser.add_argument("clean", help="the clean prompt, e.g. 'The Eiffel Tower is in the city of'")
    parser.add_argument("corrupted", help="the corrupted prompt, the same number of tokens, e.g. "
                                          "'The Colosseum is in the city of'")
    add_model_arguments(parser)
    add_contrast_arguments(parser, answer="the clean prompt's most likely next word",
                           wrong="the corrupted prompt's most likely next word")
    parser.add_argument("--site", default="resid_pre", choices=("resid_pre", "head_out"),
                        help="what is patched: the residual stream x_l per position, or each head's output at every "
                             "position (default: resid_pre)")
    add_batch_argument(parser)
    add_experiment_outputs(parser, "patch")
    return parser


def run(args: argparse.Namespace) -> int:
    """Sweep, print the matrix, write the CSV and the map."""
    from ..analysis.patching import patching_matrix, patching_rows, text_patching

    require_matplotlib(args)
    out = output_folder(args.out)
    with progress_bar(args, 2, "patch", unit="pass") as bar:
        model, tokenizer = load_model_and_tokenizer(args)
        result = text_patching(model, tokenizer, args.clean, args.corrupted, args.answer, args.wrong,
                               metric=args.metric, site=args.site, rows_per_pass=args.batch_size, progress=bar)
    print(f"{result.passes} forward passes")
    return write_experiment(args, out, "patch", patching_matrix(result), patching_rows(result),
                            "patching_figure", result)
