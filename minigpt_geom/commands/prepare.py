"""`minigpt-geom prepare CORPUS -o DIR`: tokenise a text file or folder once into train.bin and val.bin."""

from __future__ import annotations

import argparse

from . import add_command, add_pattern_argument, add_quiet_argument, show_progress

SUMMARY = "tokenise a corpus for training"


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """--val-fraction and --pattern: how a corpus is split and which files of a folder are read."""
    parser.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                        help="the last F of the tokens is held out for validation (default: 0.1)")
    add_pattern_argument(parser)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `prepare` subcommand."""
    parser = add_command(subparsers, "prepare", SUMMARY, __doc__.split(":", 1)[1].strip())
    parser.add_argument("corpus", help="a text file, or a folder of them")
    parser.add_argument("-o", "--out", required=True, metavar="DIR", help="folder for train.bin, val.bin, meta.json")
    parser.add_argument("--tokenizer", default="gpt2", metavar="SOURCE",
                        help="where vocab.json and merges.txt are (default: gpt2)")
    add_corpus_arguments(parser)
    add_quiet_argument(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Tokenise and report the token counts."""
    from ..data import prepare
    from . import output_folder

    data = prepare(args.corpus, args.tokenizer, output_folder(args.out), val_fraction=args.val_fraction,
                   pattern=args.pattern, progress=show_progress(args))
    print(f"{len(data.meta['files'])} files: {len(data.train):,} training and {len(data.val):,} held-out tokens "
          f"in {args.out}")
    return 0
