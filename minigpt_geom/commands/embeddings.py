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
        "(a) L2 and cosine distance of E (as is, centred, scaled, both) to its projection by block 0's ln_1 "
        "(layernorm(E) on GPT-2); (b) top and bottom words by ‖e‖, ‖γ⊙e‖, ‖e‖+β·e, ‖γ⊙e‖+β·e, the bound "
        "√d‖γ⊙e‖+β·e and the tight bound h(γ⊙e)+β·e (ln_f's γ, β; h: √d‖centre(·)‖ on layer norm's sphere). "
        "On an LN-free model (a) and the bounds do not apply: the rankings by the norms alone. With --out, the "
        "tables and a figure of the ranked words.")
    add_model_arguments(parser)
    add_output_argument(parser, "the tables (.txt, .md, .tex and .csv) and embeddings_reach.FORMAT")
    parser.add_argument("-k", type=positive_int, default=5, help="words at the top and at the bottom (default: 5)")
    add_ranking_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print both tables; with --out also write them."""
    from ..analysis.embeddings import (distance_note, distance_table, reach_caption, reach_csv_table, reach_table,
                                       reachability, sphere_distances, top_and_bottom)
    from ..analysis.tables import write_csv, write_table

    out = checked_output(args)
    with progress_bar(args, 2, "embeddings") as bar:
        model, tokenizer, allowed = load_with_vocabulary(args)
        bar.update()
        note = distance_note(model)  # an LN-free model: (a) does not apply, the rankings by ‖e‖ still do
        distances = None if note else sphere_distances(model)
        ranked = top_and_bottom(reachability(model), args.k, allowed)
        bar.update()
    tables = {"embeddings_reach": reach_table(ranked, tokenizer, reach_caption(model))}
    if distances is not None:
        tables = {"embeddings_sphere_distance": distance_table(distances), **tables}
    else:
        print(note + "\n")
    for table in tables.values():
        print(table.format(args.style))
    if out is not None:
        with staged_outputs(out) as stage:
            written = [path for name, table in tables.items()
                       for path in write_table(output_file(stage, name), [table])]
            written += [write_csv(output_file(stage, f"{name}.csv"), reach_csv_table(ranked, tokenizer)
                                  if name == "embeddings_reach" else table) for name, table in tables.items()]
            if not args.no_plot:
                from ..analysis import plots

                figure = plots.reach_figure(ranked, lambda t: tokenizer.decode([t]))
                written.append(write_figure(figure, output_file(stage, f"embeddings_reach.{args.format}"), args.dpi))
        report_written(out, written)
    return 0
