"""`minigpt-geom lens "text"`: the logit lens, LN_f(x_l) Eᵀ at every layer, as a table, a CSV and a grid figure.

Also home of the highlight arguments shared by the trajectory and report commands."""

from __future__ import annotations

import argparse

from . import add_model_arguments, load_model_and_tokenizer, output_folder, positive_int


def add_highlight_arguments(parser: argparse.ArgumentParser) -> None:
    """--word WORD | --position N: the token whose path is highlighted."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--word", help="token to highlight, e.g. ' one' (default: ' one' if present, else the last)")
    group.add_argument("--position", type=int, help="position of the token to highlight (negative counts from the end)")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `lens` subcommand."""
    parser = subparsers.add_parser("lens", help="logit lens of a text: every layer decoded as LN_f(x_l) Eᵀ")
    parser.add_argument("text", help="the text to run through the model")
    add_model_arguments(parser)
    parser.add_argument("-o", "--out", default="lens", help="output folder for lens.csv and lens_grid.png (default: lens)")
    parser.add_argument("--top-k", type=positive_int, default=5, help="words shown per layer (default: 5)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the lens table of every position; write lens.csv (and lens_grid.png)."""
    from ..analysis.lens import format_lens, lens_rows, logit_lens, token_words, trace_text, write_csv

    out = output_folder(args.out)
    model, tokenizer = load_model_and_tokenizer(args)
    ids, _, trace = trace_text(model, tokenizer, args.text)
    decode = lambda i: tokenizer.decode([i])  # noqa: E731
    words = token_words(tokenizer, ids)
    lens = logit_lens(model, trace, k=args.top_k)
    print(format_lens(lens, words, decode))
    print(f"wrote {write_csv(lens_rows(lens, words, decode), out / 'lens.csv')}")
    if not args.no_plot:
        from ..analysis import plots

        print(f"wrote {plots.save_figure(plots.lens_grid_figure(lens, words, decode), out / 'lens_grid.png')}")
    return 0
