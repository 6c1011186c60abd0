"""`minigpt-geom lens "text"`: the logit lens, LN_f(x_l) Eᵀ at every layer, as a table, a CSV and a grid figure."""

from __future__ import annotations

import argparse

from .arguments import (add_command, add_figure_arguments, add_model_arguments, add_output_argument, add_text_argument,
                        positive_int)
from .loading import lens_of_text
from .outputs import checked_output, output_file, progress_bar, report_written, staged_outputs, write_figure

SUMMARY = "logit lens of a text: every layer decoded as LN_f(x_l) Eᵀ"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `lens` subcommand."""
    parser = add_command(subparsers, "lens", SUMMARY)
    add_text_argument(parser)
    add_model_arguments(parser)
    add_output_argument(parser, "lens.csv and lens_grid.FORMAT", default="lens")
    parser.add_argument("--top-k", type=positive_int, default=5, help="words shown per layer (default: 5)")
    add_figure_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the lens table of every position; write lens.csv (and the grid figure)."""
    from ..analysis.lens import angle_note, format_lens, lens_rows, next_word_ranks
    from ..analysis.tables import Table, write_csv

    out = checked_output(args)
    with progress_bar(args, 2 if args.no_plot else 3, "lens") as bar:
        model, tokenizer, words, trace, lens = lens_of_text(args, bar)
        decode = lambda i: tokenizer.decode([i])  # noqa: E731
        if not args.no_plot:
            from ..analysis import plots
            from ..model.variants import map_label

            ranks = next_word_ranks(model, trace.states[:, 0], tokenizer.encode(args.text)) if len(words) > 1 else None
            figure = plots.lens_grid_figure(lens, words, decode, next_ranks=ranks,
                                            points=map_label(model.ln_f.variant, "f", "x_l"))
            bar.update()
    print(format_lens(lens, words, decode, angle=angle_note(model)))
    with staged_outputs(out) as stage:
        written = [write_csv(output_file(stage, "lens.csv"), Table.from_records(lens_rows(lens, words, decode)))]
        if not args.no_plot:
            written.append(write_figure(figure, output_file(stage, f"lens_grid.{args.format}"), args.dpi))
    report_written(out, written)
    return 0
