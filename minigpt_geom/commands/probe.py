"""`minigpt-geom probe [WORD ...]`: experiment 2, query-key and key-value probes of single-token words."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..analysis import format_csv, format_table, token_label, write_text
from . import add_source_arguments, load_model_and_tokenizer, output_folder, positive_int

if TYPE_CHECKING:
    from ..analysis.probe import ProbeRow
    from ..tokenizer import Tokenizer


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `probe` subcommand."""
    parser = subparsers.add_parser(
        "probe", help="experiment 2: which words each head attends to from a word, and what it writes",
        description="For each word (default: ~100 common nouns) that is one token, per head and for the "
                    "block's sum: the top-k keys of Ẽ[n] W_QK Ẽᵀ and the top-k words of ln_f(E[n] + u_h + b_O) Eᵀ.")
    parser.add_argument("words", nargs="*", help="words to probe (default: the built-in common nouns)")
    add_source_arguments(parser)
    parser.add_argument("--blocks", type=int, nargs="+", metavar="L",
                        help="blocks to probe (default: 0 5 11, clipped to the model's blocks)")
    parser.add_argument("-k", type=positive_int, default=5, help="matches per word and head (default: 5)")
    parser.add_argument("--leading-space", action="store_true",
                        help="encode each word with a leading space (' stone'); the paper encodes without")
    parser.add_argument("--format", choices=["text", "markdown"], default="text", help="printed table style")
    return parser


def probe_table(rows: Sequence[ProbeRow], tokenizer: Tokenizer) -> tuple[list[str], list[list]]:
    """Header and rows of one probe's table: word, head, the matches, ‖u‖ (key-value)."""
    header = ["word", "head", "top matches", "‖u‖"]
    return header, [[r.word, "sum" if r.head is None else r.head,
                     ", ".join(token_label(tokenizer, t) for t in r.matches), r.update_norm] for r in rows]


def run(args: argparse.Namespace) -> int:
    """Print one table per block and probe, or write them (.md, .txt) and one .csv into --out."""
    from ..analysis.nouns import COMMON_NOUNS
    from ..analysis.probe import KEY_VALUE, QUERY_KEY, probe_blocks, single_token_words
    from ..errors import InputError

    if args.out:
        output_folder(args.out)
    model, tokenizer = load_model_and_tokenizer(args)
    words, dropped = single_token_words(tokenizer, args.words or COMMON_NOUNS, leading_space=args.leading_space)
    if dropped:
        print(f"dropped {len(dropped)} word(s) that are not one token: {', '.join(dropped)}")
    if not words:
        hint = "" if args.leading_space else " (try --leading-space)"
        raise InputError(f"none of the words is a single token for this tokenizer{hint}")
    print(f"probing {len(words)} word(s)")
    rows = probe_blocks(model, args.blocks, words, args.k)

    order = {word: i for i, (word, _) in enumerate(words)}
    rows = sorted(rows, key=lambda r: (order[r.word], r.head is None, r.head or 0))  # by word, heads then sum
    blocks = list(dict.fromkeys(r.layer for r in rows))
    sections = []  # (file stem, caption, rows)
    for layer in blocks:
        for probe, what in ((QUERY_KEY, "keys Ẽ_j by Ẽ[n] W_QK Ẽ_jᵀ"),
                            (KEY_VALUE, "words of ln_f(E[n] + u_h + b_O) Eᵀ")):
            caption = f"block {layer}, {probe} probe: top-{args.k} {what}"
            sections.append((f"probe_block{layer}_{probe.replace('-', '_')}", caption,
                             [r for r in rows if r.layer == layer and r.probe == probe]))
    if not args.out:
        for _, caption, section in sections:
            print(format_table(*probe_table(section, tokenizer), args.format, caption))
        return 0
    for stem, caption, section in sections:
        write_text(args.out / f"{stem}.md", format_table(*probe_table(section, tokenizer), "markdown", caption))
        write_text(args.out / f"{stem}.txt", format_table(*probe_table(section, tokenizer), "text", caption))
    long = [[r.probe, r.layer, "sum" if r.head is None else r.head, r.word, r.token, r.update_norm, rank, t,
             tokenizer.decode([t]), s] for r in rows for rank, (t, s) in enumerate(zip(r.matches, r.scores))]
    header = ["probe", "block", "head", "word", "token", "update_norm", "rank", "match", "match_text", "score"]
    write_text(args.out / "probe.csv", format_csv(header, long))
    print(f"tables written to {args.out}/probe_block*.{{md,txt}} and {args.out}/probe.csv")
    return 0
