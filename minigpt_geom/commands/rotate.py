"""`minigpt-geom rotate "text" --toward W --answer W`: turn a word's point toward another word, p(answer) by angle."""

from __future__ import annotations

import argparse

from .arguments import (add_command, add_contrast_arguments, add_experiment_outputs, add_model_arguments,
                        add_text_argument, index, positive_int, whole_number)
from .loading import load_model_and_tokenizer
from .outputs import output_folder, require_matplotlib, write_experiment

SUMMARY = "moving a word: turn its point on a norm site's sphere toward another word, and read p(answer) by angle"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `rotate` subcommand."""
    parser = add_command(
        subparsers, "rotate", SUMMARY,
        "Turn one position's point at a norm site (ln_1 or ln_2 of each chosen block, or ln_f) toward another "
        "word's point on the same set, by θ from 0 to π/2, the radius kept, and read the answer's metric at the "
        "last position. Every layer and angle runs in one batch. A norm variant without a sphere (dyt, none, "
        "fixed_sigma) has no rotation and says so. Prints the table; writes rotate.csv and rotate.FORMAT.")
    add_text_argument(parser)
    add_model_arguments(parser)
    parser.add_argument("--toward", required=True, metavar="WORD", help="the word to turn toward, one token")
    parser.add_argument("--position", type=whole_number, default=-1,
                        help="the word turned; negative counts from the end (default: -1, the last)")
    parser.add_argument("--layer", type=index, nargs="+", metavar="L", help="blocks whose site is turned "
                                                                           "(default: all)")
    parser.add_argument("--site", default="ln_1", choices=("ln_1", "ln_2", "ln_f"),
                        help="which norm site's point is turned; ln_f has no layer (default: ln_1)")
    parser.add_argument("--steps", type=positive_int, default=9, help="angles from 0 to π/2 (default: 9)")
    add_contrast_arguments(parser, answer="the most likely next word", wrong="the second most likely",
                           metric="probability")
    add_experiment_outputs(parser, "rotate")
    return parser


def run(args: argparse.Namespace) -> int:
    """Turn the word at every angle and layer, print the table, write the CSV and the curves."""
    from ..analysis.rotation import rotation_matrix, rotation_rows, text_rotation

    require_matplotlib(args)
    out = output_folder(args.out)
    model, tokenizer = load_model_and_tokenizer(args)
    result = text_rotation(model, tokenizer, args.text, args.toward, args.answer, args.wrong, metric=args.metric,
                           position=args.position, layers=args.layer, site=args.site, steps=args.steps)
    return write_experiment(args, out, "rotate", rotation_matrix(result), rotation_rows(result),
                            "rotation_figure", result)
