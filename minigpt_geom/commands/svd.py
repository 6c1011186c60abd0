"""`minigpt-geom svd`: experiment 3, singular vectors of W_QK and W_VO read as words, key-bias probes."""

from __future__ import annotations

import argparse

from .arguments import add_command, add_model_arguments, add_output_argument, add_ranking_arguments, index, positive_int
from .loading import load_with_vocabulary
from .outputs import checked_output, output_file, progress_bar, report_written, staged_outputs

SUMMARY = "experiment 3: singular vectors of each head's W_QK and W_VO as words"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `svd` subcommand."""
    parser = add_command(subparsers, "svd", SUMMARY,
        "Tables 'Rank | top-k left words | top-k right words' for the top singular pairs of W_QK (both sides vs "
        "ln_1(E)) and W_VO (input vs ln_1(E), output vs E), signs fixed by the largest match; key-bias words; "
        "with --out, the tables and a figure per layer and circuit: each head's singular values, small multiples.")
    add_model_arguments(parser)
    add_output_argument(parser, "the tables (.txt, .md, .tex), svd.csv and the singular-value figures")
    parser.add_argument("--layer", type=index, nargs="+", metavar="L",
                        help="layers (default: 0 5 11, clipped to the model's layers)")
    parser.add_argument("--head", type=index, nargs="+", metavar="H", help="heads (default: all)")
    parser.add_argument("--circuits", nargs="+", choices=["QK", "VO"], default=["QK", "VO"],
                        help="which matrices: W_QK, W_VO or both (default: both)")
    parser.add_argument("--pairs", type=positive_int, default=20,
                        help="singular pairs per table, at most d_head (default: 20)")
    parser.add_argument("-k", type=positive_int, default=3, help="words per singular vector (default: 3)")
    parser.add_argument("--bias-words", type=positive_int, default=5,
                        help="words per side of the key-bias probe (default: 5)")
    add_ranking_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print every table; with -o also write them (.txt, .md, .tex per layer and circuit, one .csv) and the figures."""
    from ..analysis.probe import default_layers
    from ..analysis.svd import plot_singular_values, svd_tables
    from ..analysis.tables import write_csv, write_table

    out = checked_output(args)
    model, tokenizer, allowed = load_with_vocabulary(args)
    layers = args.layer if args.layer is not None else default_layers(model.config.n_layer)
    heads = args.head if args.head is not None else list(range(model.config.n_head))
    with progress_bar(args, len(layers) * len(heads), "svd", unit="head") as bar:
        result = svd_tables(model, tokenizer, layers, heads, args.circuits, args.pairs, args.k, args.bias_words,
                            progress=bar, allowed=allowed)
    for layer in layers:  # printed with or without -o, as every command's tables
        for circuit in args.circuits:
            for table in result.singular[layer, circuit]:
                print(table.format(args.style))
        print(result.key_bias[layer].format(args.style))
    if out is None:
        return 0
    written = []
    with staged_outputs(out) as stage:
        for (layer, circuit), tables in result.singular.items():
            stem = f"svd_layer{layer}_{circuit.lower()}"
            written += write_table(output_file(stage, stem), tables)
            if not args.no_plot:
                title = f"singular values of $W_{{{circuit}}}$ per head, layer {layer}"
                written.append(plot_singular_values(result.spectra[layer, circuit],
                                                    output_file(stage, f"{stem}_spectrum.{args.format}"), title,
                                                    dpi=args.dpi, circuit=circuit))
        for layer, table in result.key_bias.items():
            written += write_table(output_file(stage, f"svd_layer{layer}_key_bias"), [table])
        written.append(write_csv(output_file(stage, "svd.csv"), result.long))
    report_written(out, written)
    return 0
