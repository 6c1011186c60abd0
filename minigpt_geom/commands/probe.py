"""`minigpt-geom probe [WORD ...]`: experiment 2, query-key and key-value probes of single-token words."""

from __future__ import annotations

import argparse

from .arguments import (add_command, add_model_arguments, add_output_argument, add_ranking_arguments, index,
                        positive_int, utf8_text)
from .loading import load_with_vocabulary
from .outputs import checked_output, output_file, progress_bar, report_written, staged_outputs, write_figure

SUMMARY = "experiment 2: which words each head attends to from a word, and what it writes"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `probe` subcommand."""
    parser = add_command(subparsers, "probe", SUMMARY,
        "For each word (default: ~100 common nouns) that is one token, per head and for the layer's sum: the "
        "top-k keys of Ẽ[n] W_QK Ẽᵀ with ‖q‖ = ‖Ẽ[n] W_QK‖, and the top-k words of ln_f(E[n] + u_h + b_O) Eᵀ "
        "with ‖u_h‖. With --out, the tables and one figure per layer of each head's best match.")
    parser.add_argument("words", nargs="*", type=utf8_text, help="words to probe (default: the built-in common nouns)")
    add_model_arguments(parser)
    add_output_argument(parser, "the tables (.txt, .md, .tex), probe.csv and probe_layerL.FORMAT")
    parser.add_argument("--layer", type=index, nargs="+", metavar="L",
                        help="layers to probe (default: 0 5 11, clipped to the model's layers)")
    parser.add_argument("-k", type=positive_int, default=5, help="matches per word and head (default: 5)")
    parser.add_argument("--leading-space", action="store_true",
                        help="encode each word with a leading space (' stone'); the paper encodes without")
    add_ranking_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print one table per layer and probe; with --out also write them and probe.csv."""
    from ..analysis.nouns import COMMON_NOUNS
    from ..analysis.probe import default_layers, probe_csv_table, probe_layers, probe_tables, single_token_words
    from ..analysis.tables import write_csv, write_table
    from ..errors import InputError

    out = checked_output(args)
    model, tokenizer, allowed = load_with_vocabulary(args)
    words, dropped = single_token_words(tokenizer, args.words or COMMON_NOUNS, leading_space=args.leading_space)
    if dropped:
        print(f"dropped {len(dropped)} word(s) that are not one token: {', '.join(dropped)}")
    if not words:
        hint = "" if args.leading_space else " (try --leading-space)"
        raise InputError(f"none of the words is a single token for this tokenizer{hint}")
    print(f"probing {len(words)} word(s)")
    layers = args.layer if args.layer is not None else default_layers(model.config.n_layer)
    with progress_bar(args, len(layers), "probe", unit="layer") as bar:
        rows = probe_layers(model, layers, words, args.k, progress=bar, allowed=allowed)
    tables = probe_tables(rows, tokenizer, args.k)
    for table in tables.values():
        print(table.format(args.style))
    if out is not None:
        with staged_outputs(out) as stage:
            written = [path for name, table in tables.items()
                       for path in write_table(output_file(stage, name), [table])]
            written.append(write_csv(output_file(stage, "probe.csv"), probe_csv_table(rows, tokenizer)))
            if not args.no_plot:
                from ..analysis import plots

                for layer in layers:
                    figure = plots.probe_figure([row for row in rows if row.layer == layer],
                                                lambda t: tokenizer.decode([t]))
                    written.append(write_figure(figure, output_file(stage, f"probe_layer{layer}.{args.format}"),
                                                args.dpi))
        report_written(out, written)
    return 0
