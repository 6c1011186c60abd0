"""`minigpt-geom norms "text"`: every layer-norm variant against the model's own, on one text."""

from __future__ import annotations

import argparse

from .arguments import add_command, add_model_arguments, add_style_argument, add_text_argument
from .loading import load_model_and_tokenizer
from .outputs import progress_bar

SUMMARY = "KL, top-1 agreement and perplexity of each norm variant against the model's own"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `norms` subcommand."""
    parser = add_command(
        subparsers, "norms", SUMMARY,
        "Swap the norm of every site for each registered variant (layernorm, rmsnorm, sphere, none, dyt, ...) "
        "and compare its next-token predictions on the text with the model's own (the first row, as loaded: "
        "KL 0 and its own perplexity). A variant that cannot run on these weights says why. Prints a table.")
    add_text_argument(parser, "the text to score (at least two tokens)")
    add_model_arguments(parser)
    parser.add_argument("--variants", nargs="+", metavar="NAME", help="variants to compare (default: all registered)")
    add_style_argument(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print one row per variant."""
    import torch

    from ..analysis.norms import compare_norms, norms_table
    from ..analysis.text import encode_text
    from ..model.variants import NORM_VARIANTS

    variants = args.variants or list(NORM_VARIANTS)
    with progress_bar(args, 2 + len(variants), "norms") as bar:
        model, tokenizer = load_model_and_tokenizer(args)
        bar.update()
        idx = torch.tensor([encode_text(tokenizer, args.text, model.config.n_ctx)])
        rows = compare_norms(model, idx, variants, progress=bar)
    print(norms_table(rows, idx.shape[1]).format(args.style), end="")
    return 0
