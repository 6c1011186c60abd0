"""`minigpt-geom qk BLOCK HEAD`: a head's strongest query-key word pairs over the whole vocabulary."""

from __future__ import annotations

import argparse

from ..analysis import format_csv, format_table, token_label, write_text
from . import add_source_arguments, load_model_and_tokenizer, output_folder, positive_int


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `qk` subcommand."""
    parser = subparsers.add_parser(
        "qk", help="a head's top query-key word pairs over the full vocabulary (V² scores, in blocks)",
        description="Every word as query against every word as key: s = ln_1(E_q) W_QK ln_1(E_k)ᵀ (optionally "
                    "with the biases and position embeddings); the top-k pairs, computed block by block.")
    parser.add_argument("block", type=int, help="block (layer) index")
    parser.add_argument("head", type=int, help="head index")
    add_source_arguments(parser)
    parser.add_argument("-k", type=positive_int, default=20, help="pairs to report (default: 20)")
    parser.add_argument("--biases", action="store_true", help="include b_Q and b_K in the scores")
    parser.add_argument("--query-position", type=int, metavar="P", help="add position P's embedding to query words")
    parser.add_argument("--key-position", type=int, metavar="P", help="add position P's embedding to key words")
    parser.add_argument("--block-size", type=int, default=512, help="query words per block (default: 512)")
    parser.add_argument("--vocab-limit", type=positive_int, metavar="N", help="only the first N words (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--format", choices=["text", "markdown", "latex"], default="text", help="printed table style")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the top pairs; with --out also write them as .md, .txt and .csv."""
    from ..analysis.qk import strongest_pairs

    if args.out:
        output_folder(args.out)
    model, tokenizer = load_model_and_tokenizer(args)
    pairs = strongest_pairs(model, args.block, args.head, args.k, biases=args.biases,
                            query_position=args.query_position, key_position=args.key_position,
                            block_size=args.block_size, vocab_limit=args.vocab_limit, progress=not args.no_progress)
    setting = ", ".join(filter(None, [
        "with biases" if args.biases else "no biases",
        f"query position {args.query_position}" if args.query_position is not None else "",
        f"key position {args.key_position}" if args.key_position is not None else "",
        f"first {args.vocab_limit} words" if args.vocab_limit else "",
    ]))
    caption = f"block {args.block}, head {args.head}: top {len(pairs)} query-key pairs ({setting})"
    header = ["rank", "query", "key", "score"]
    rows = [[i, token_label(tokenizer, p.query), token_label(tokenizer, p.key), p.score] for i, p in enumerate(pairs)]
    print(format_table(header, rows, args.format, caption))
    if args.out:
        stem = args.out / f"qk_block{args.block}_head{args.head}"
        write_text(stem.with_suffix(".md"), format_table(header, rows, "markdown", caption))
        write_text(stem.with_suffix(".txt"), format_table(header, rows, "text", caption))
        long = [[i, p.query, tokenizer.decode([p.query]), p.key, tokenizer.decode([p.key]), p.score]
                for i, p in enumerate(pairs)]
        header = ["rank", "query", "query_text", "key", "key_text", "score"]
        write_text(stem.with_suffix(".csv"), format_csv(header, long))
        print(f"tables written to {stem}.{{md,txt,csv}}")
    return 0
