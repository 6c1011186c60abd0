"""`minigpt-geom compare "text" --against SOURCE`: two models on the same text, layer by layer, side by side."""

from __future__ import annotations

import argparse

from . import (add_command, add_figure_arguments, add_model_arguments, add_output_argument, add_text_argument,
               load_model_and_tokenizer, output_file, output_folder, progress_bar, report_written, require_matplotlib,
               staged_outputs, write_figure)

SUMMARY = ("two models side by side on one text: norms, angular path, logit lens (e.g. a model and its LN-free "
           "fine-tune)")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `compare` subcommand."""
    parser = add_command(subparsers, "compare", SUMMARY)
    add_text_argument(parser, "the text to run through both models")
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
        with staged_outputs(out) as stage:
            written = [write_csv(output_file(stage, "compare.csv"), table)]
            if not args.no_plot:
                from ..analysis import plots

                written.append(write_figure(plots.compare_figure(rows), output_file(stage, f"compare.{args.format}"),
                                            args.dpi))
        bar.update()
    report_written(out, written)
    return 0
