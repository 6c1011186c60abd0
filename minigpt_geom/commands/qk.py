"""`minigpt-geom qk --layer L --head H`: a head's strongest query-key word pairs over the whole vocabulary."""

from __future__ import annotations

import argparse

from .arguments import add_command, add_model_arguments, add_output_argument, add_ranking_arguments, index, positive_int
from .loading import load_with_vocabulary
from .outputs import checked_output, output_file, progress_bar, report_written, staged_outputs, write_figure

SUMMARY = "a head's top query-key word pairs over the full vocabulary (V² scores, in chunks)"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `qk` subcommand."""
    parser = add_command(subparsers, "qk", SUMMARY,
        "Every word as query against every word as key: s = ln_1(E_q) W_QK ln_1(E_k)ᵀ (optionally with the "
        "biases and position embeddings); the top-k pairs, computed chunk by chunk of query words. "
        "With --out, the table and a figure of the pairs.")
    parser.add_argument("--layer", type=index, default=0, metavar="L", help="layer (block) of the head (default: 0)")
    parser.add_argument("--head", type=index, default=0, metavar="H", help="head within the layer (default: 0)")
    add_model_arguments(parser)
    add_output_argument(parser, "the table (.txt, .md, .tex, .csv) and its figure")
    parser.add_argument("-k", type=positive_int, default=20, help="pairs to report (default: 20)")
    parser.add_argument("--biases", action="store_true", help="include b_Q and b_K in the scores")
    parser.add_argument("--query-position", type=index, metavar="P", help="add position P's embedding to query words")
    parser.add_argument("--key-position", type=index, metavar="P", help="add position P's embedding to key words")
    parser.add_argument("--chunk-size", type=positive_int, default=512, metavar="N",
                        help="query words scored at once: memory is chunk × vocabulary floats (default: 512)")
    parser.add_argument("--vocab-limit", type=positive_int, metavar="N", help="only the first N words (default: all)")
    add_ranking_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the top pairs; with --out also write them."""
    from ..analysis.qk import pairs_caption, pairs_csv_table, pairs_table, strongest_pairs, top_pairs_bytes
    from ..analysis.tables import write_csv, write_table
    from ..memory import check_fits

    out = checked_output(args)
    model, tokenizer, allowed = load_with_vocabulary(args)
    n_words = min(args.vocab_limit or model.config.vocab_size, model.config.vocab_size)
    needed = top_pairs_bytes(n_words, args.k, args.chunk_size, model.wte.weight.element_size())
    check_fits(f"-k {args.k} with --chunk-size {args.chunk_size}", needed, model.wte.weight.device)
    if allowed is not None:
        n_words = int(allowed[:n_words].sum())
    with progress_bar(args, n_words, f"qk layer {args.layer} head {args.head}", unit="word") as bar:
        pairs = strongest_pairs(model, args.layer, args.head, args.k, biases=args.biases,
                                query_position=args.query_position, key_position=args.key_position,
                                chunk_size=args.chunk_size, vocab_limit=args.vocab_limit, progress=bar,
                                allowed=allowed)
    caption = pairs_caption(args.layer, args.head, len(pairs), biases=args.biases, query_position=args.query_position,
                            key_position=args.key_position, vocab_limit=args.vocab_limit)
    table = pairs_table(pairs, tokenizer, caption)
    print(table.format(args.style))
    if out is not None:
        stem = f"qk_layer{args.layer}_head{args.head}"
        with staged_outputs(out) as stage:
            written = write_table(output_file(stage, stem), [table])
            written.append(write_csv(output_file(stage, f"{stem}.csv"), pairs_csv_table(pairs, tokenizer)))
            if not args.no_plot:
                from ..analysis import plots

                figure = plots.qk_pairs_figure(pairs, lambda t: tokenizer.decode([t]), layer=args.layer,
                                               head=args.head)
                written.append(write_figure(figure, output_file(stage, f"{stem}.{args.format}"), args.dpi))
        report_written(out, written)
    return 0
