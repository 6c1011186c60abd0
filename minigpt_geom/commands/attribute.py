"""`minigpt-geom attribute "text" --answer W --wrong W`: each head's and MLP's share of the logit difference."""

from __future__ import annotations

import argparse

from .arguments import (add_command, add_contrast_arguments, add_experiment_outputs, add_model_arguments,
                        add_text_argument, whole_number)
from .loading import load_model_and_tokenizer
from .outputs import output_folder, require_matplotlib, write_experiment

SUMMARY = "direct logit attribution: each head's and MLP's share of z_answer − z_wrong through ln_f, scale frozen"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `attribute` subcommand."""
    parser = add_command(
        subparsers, "attribute", SUMMARY,
        "Split the logit difference between an answer and a wrong word at one position into the embeddings, every "
        "head, every attention bias, every MLP and the rest (ln_f's β and the unembedding's bias), reading each "
        "update through ln_f with its scale frozen at this run's. The parts sum to the logit difference. Prints the "
        "table; writes attribute.csv and the bars attribute.FORMAT.")
    add_text_argument(parser, "the prompt")
    add_model_arguments(parser)
    add_contrast_arguments(parser, answer="the most likely next word", wrong="the second most likely")
    parser.add_argument("--position", type=whole_number, default=-1,
                        help="where the logits are read; negative counts from the end (default: -1, the last)")
    add_experiment_outputs(parser, "attribute")
    return parser


def run(args: argparse.Namespace) -> int:
    """Attribute, print the table, write the CSV and the bars."""
    from ..analysis.attribution import attribution_table, text_attribution
    from ..errors import InputError

    if args.metric != "logit_diff":
        raise InputError("direct logit attribution splits the logit difference, which is linear in ln_f's output; "
                         "the probability is not: leave out --metric")
    require_matplotlib(args)
    out = output_folder(args.out)
    model, tokenizer = load_model_and_tokenizer(args)
    result = text_attribution(model, tokenizer, args.text, args.answer, args.wrong, position=args.position)
    return write_experiment(args, out, "attribute", attribution_table(result), None, "attribution_figure", result)
