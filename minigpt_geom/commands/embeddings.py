"""`minigpt-geom embeddings`: experiment 1, the word embeddings against layer norm and ln_f's reach."""

from __future__ import annotations

import argparse

from .arguments import add_command, add_model_arguments, add_output_argument, add_ranking_arguments, positive_int
from .loading import load_with_vocabulary
from .outputs import checked_output, output_file, progress_bar, report_written, staged_outputs, write_figure

SUMMARY = "experiment 1: E vs layer norm; words ranked by how easily ln_f reaches them"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `embeddings` subcommand."""
    parser = add_command(subparsers, "embeddings", SUMMARY,
        "(a) L2 and cosine distance of E (as is, centred, scaled, both) to layer_norm(E); (b) top and bottom "
        "words by ‖e‖, ‖γ⊙e‖, ‖e‖+β·e, ‖γ⊙e‖+β·e, the bound √d‖γ⊙e‖+β·e and the tight bound "
        "√d‖centre(γ⊙e)‖+β·e (ln_f's γ, β). With --out, the tables and a figure of the ranked words.")
    add_model_arguments(parser)
    add_output_argument(parser, "the tables (.txt, .md, .tex and .csv) and embeddings_reach.FORMAT")
    parser.add_argument("-k", type=positive_int, default=5, help="words at the top and at the bottom (default: 5)")
    add_ranking_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print both tables; with --out also write them."""
    from ..analysis.embeddings import (distance_table, reach_caption, reach_csv_table, reach_table, reachability,
                                       sphere_distances, top_and_bottom)
    from ..analysis.tables import write_csv, write_table

    out = checked_output(args)
    with progress_bar(args, 2, "embeddings") as bar:
        model, tokenizer, allowed = load_with_vocabulary(args)
        bar.update()
        distances, ranked = sphere_distances(model), top_and_bottom(reachability(model), args.k, allowed)
        bar.update()
    tables = {"embeddings_sphere_distance": distance_table(distances),
              "embeddings_reach": reach_table(ranked, tokenizer, reach_caption(model))}
    for table in tables.values():
        print(table.format(args.style))
    if out is not None:
        with staged_outputs(out) as stage:
            written = [path for name, table in tables.items()
                       for path in write_table(output_file(stage, name), [table])]
            written.append(write_csv(output_file(stage, "embeddings_sphere_distance.csv"), distance_table(distances)))
            written.append(write_csv(output_file(stage, "embeddings_reach.csv"), reach_csv_table(ranked, tokenizer)))
            if not args.no_plot:
                from ..analysis import plots

                figure = plots.reach_figure(ranked, lambda t: tokenizer.decode([t]))
                written.append(write_figure(figure, output_file(stage, f"embeddings_reach.{args.format}"), args.dpi))
        report_written(out, written)
    return 0
