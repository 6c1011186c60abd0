"""`minigpt-geom compare "text" --against SOURCE`: two models on the same text, layer by layer, side by side."""

from __future__ import annotations

import argparse

from . import (add_command, add_figure_arguments, add_model_arguments, add_output_argument, load_model_and_tokenizer,
               make_output_folder, output_file, output_folder, progress_bar, report_written, require_matplotlib,
               write_figure)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `compare` subcommand."""
    parser = add_command(subparsers, "compare", "two models side by side on one text: norms, angular path, "
                                                "logit lens (e.g. a model and its LN-free fine-tune)")
    parser.add_argument("text", help="the text to run through both models (at most the smaller context)")
    add_model_arguments(parser)
    parser.add_argument("--against", required=True, metavar="SOURCE",
                        help="the second model (preset, hub id, directory or .safetensors file); same tokenizer")
    add_output_argument(parser, "compare.csv and compare.FORMAT", default="compare")
    add_figure_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the per-layer table of both models; write compare.csv (and the figure)."""
    from ..analysis.compare import compare_rows
    from ..analysis.tables import Table, write_csv

    require_matplotlib(args)
    out = output_folder(args.out)
    with progress_bar(args, 3, "compare") as bar:
        model, tokenizer = load_model_and_tokenizer(args)
        against, _ = load_model_and_tokenizer(argparse.Namespace(**{**vars(args), "weights": args.against}))
        bar.update()
        rows = compare_rows({args.weights: model, args.against: against}, tokenizer, args.text)
        bar.update()
        table = Table.from_records(rows, f"{args.weights} against {args.against}, means over the text's tokens")
        print(table.format("text"))
        make_output_folder(out)
        written = [write_csv(output_file(out, "compare.csv"), table)]
        if not args.no_plot:
            from ..analysis import plots

            written.append(write_figure(plots.compare_figure(rows), output_file(out, f"compare.{args.format}"),
                                        args.dpi))
        bar.update()
    report_written(written)
    return 0
