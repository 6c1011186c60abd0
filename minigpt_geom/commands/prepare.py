"""`minigpt-geom prepare CORPUS -o DIR`: tokenise a text file or folder once into train.bin and val.bin."""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import Iterator

from .arguments import add_command, add_pattern_argument, add_quiet_argument, folder_path, path_text, seed
from .outputs import show_progress

SUMMARY = "tokenise a corpus for training"

BACKENDS = ("auto", "reference", "fast")  # fast_tokenizer.BACKENDS, written here so that --help imports nothing
SPLITS = ("documents", "last")  # data.SPLITS


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """--val-fraction, --val-split, --split-seed, --pattern and --tokenizer-backend: how a corpus is read and split."""
    parser.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                        help="about F of the tokens is held out for validation (default: 0.1)")
    parser.add_argument("--val-split", choices=SPLITS, default="documents",
                        help="documents: whole documents (files, or 1 MiB parts of longer ones) drawn at random with "
                             "--split-seed; last: the last F of the tokens, i.e. the alphabetically last files "
                             "(default: documents)")
    parser.add_argument("--split-seed", type=seed, default=0, metavar="N",
                        help="seed of the held-out documents' draw, apart from training's --seed (default: 0)")
    add_pattern_argument(parser)
    add_backend_argument(parser)


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    """--tokenizer-backend: which tokenizer reads a corpus (the ids are the same)."""
    parser.add_argument("--tokenizer-backend", choices=BACKENDS, default="auto",
                        help="reference: the first-principles BPE; fast: tiktoken, else Hugging Face tokenizers "
                             "(the first installed: pip install 'minigpt-geom[fast]') on the same vocab.json and "
                             "merges.txt, refused unless it gives the reference's ids on a sample of the corpus; "
                             "auto: fast when it gives those ids and encodes the sample faster, else reference "
                             "(default: auto)")


def corpus_settings(args: argparse.Namespace) -> dict:
    """The keyword arguments of data.prepare / data.cache_folder that the corpus options give."""
    return dict(val_fraction=args.val_fraction, pattern=args.pattern, split=args.val_split, split_seed=args.split_seed,
                backend=args.tokenizer_backend)


CORPUS_OPTIONS = {"pattern": "--pattern", "val_fraction": "--val-fraction", "split": "--val-split",
                  "split_seed": "--split-seed", "tokenizer": "--tokenizer", "tokenizer_backend": "--tokenizer-backend"}


@contextmanager
def corpus_options() -> Iterator[None]:
    """Library errors about a corpus setting, with the option that sets it named."""
    from ..errors import InputError

    try:
        yield
    except InputError as error:
        option = CORPUS_OPTIONS.get(error.field)
        if option is None:
            raise
        hint = f": choose other files with {option}, e.g. {option} '*.py'" if error.field == "pattern" else f" ({option})"
        raise InputError(f"{error}{hint}", field=error.field) from None


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `prepare` subcommand."""
    parser = add_command(subparsers, "prepare", SUMMARY, __doc__.split(":", 1)[1].strip())
    parser.add_argument("corpus", type=path_text, help="a text file, or a folder of them")
    parser.add_argument("-o", "--out", required=True, type=folder_path, metavar="DIR",
                        help="folder for train.bin, val.bin, meta.json")
    parser.add_argument("--tokenizer", default="gpt2", type=path_text, metavar="SOURCE",
                        help="where vocab.json and merges.txt are (default: gpt2)")
    add_corpus_arguments(parser)
    add_quiet_argument(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Tokenise and report the token counts."""
    from ..text.token_files import prepare
    from .outputs import output_folder

    with corpus_options():
        data = prepare(args.corpus, args.tokenizer, output_folder(args.out), progress=show_progress(args),
                       **corpus_settings(args))
    meta = data.meta
    print(f"{len(meta['files'])} files ({meta['tokenizer_backend']} tokenizer): {len(data.train):,} training and "
          f"{len(data.val):,} held-out tokens ({meta['val_documents']} of {meta['documents']} documents held out, "
          f"split {meta['split']}) in {args.out}")
    return 0
