"""`minigpt-geom tokenizer CORPUS --vocab-size N -o DIR`: train a byte-level BPE vocabulary on a corpus."""

from __future__ import annotations

import argparse
import os

from .arguments import add_command, add_pattern_argument, add_quiet_argument, folder_path, path_text, positive_int

SUMMARY = "train a byte-level BPE tokenizer (vocab.json, merges.txt) on a corpus"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `tokenizer` subcommand."""
    parser = add_command(
        subparsers, "tokenizer", SUMMARY,
        "Learn GPT-2's kind of tokenizer for your corpus with Hugging Face `tokenizers` (pip install "
        "'minigpt-geom[fast]'): GPT-2's pre-tokenising regex, its 256-byte alphabet, <|endoftext|>, and merges "
        "learned on the corpus until the vocabulary has --vocab-size tokens. Writes vocab.json and merges.txt, "
        "which every command reads: `prepare`/`train CORPUS --tokenizer DIR`. A small model then spends its "
        "parameters on the blocks rather than on 50257 embedding rows.")
    parser.add_argument("corpus", type=path_text, help="a text file, or a folder of them")
    parser.add_argument("-o", "--out", required=True, type=folder_path, metavar="DIR",
                        help="folder for vocab.json and merges.txt")
    parser.add_argument("--vocab-size", type=positive_int, required=True, metavar="N",
                        help="tokens in the vocabulary: 256 bytes, <|endoftext|> and N − 257 merges (fewer when "
                             "the corpus has fewer pairs seen --min-frequency times), e.g. 4096")
    parser.add_argument("--min-frequency", type=positive_int, default=2, metavar="K",
                        help="merge only pairs seen at least K times (default: 2)")
    add_pattern_argument(parser)
    add_quiet_argument(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Train, write the two files together, say what was learned."""
    from ..errors import InputError
    from ..text.bpe_training import BASE_TOKENS, train_bpe, write_bpe
    from ..text.corpus import corpus_files
    from .outputs import output_folder, report_written, show_progress, staged_outputs
    from .prepare import corpus_options

    if args.vocab_size < BASE_TOKENS:
        raise InputError(f"--vocab-size must be at least {BASE_TOKENS} (the 256 bytes and <|endoftext|>), "
                         f"got {args.vocab_size}")
    out = output_folder(args.out)
    if any(os.path.lexists(out / name) for name in ("model.safetensors", "config.json")):
        raise InputError(f"-o {out} holds a model, whose tokenizer must stay the one it was trained with: "
                         f"choose another folder")
    with corpus_options():
        files = corpus_files(args.corpus, args.pattern)
    tokenizer = train_bpe(files, args.vocab_size, min_frequency=args.min_frequency, progress=show_progress(args))
    with staged_outputs(out) as stage:
        written = write_bpe(tokenizer, stage)
    size = tokenizer.get_vocab_size()
    print(f"{size} tokens (256 bytes, <|endoftext|> and {size - BASE_TOKENS} learned) from {len(files)} file(s)"
          + (f"; the corpus has too few pairs seen {args.min_frequency} times for {args.vocab_size}"
             if size < args.vocab_size else ""))
    report_written(out, written)
    return 0
