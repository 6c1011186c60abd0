"""`minigpt-geom svd`: experiment 3, singular vectors of W_QK and W_VO read as words, key-bias probes."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..analysis import format_csv, format_table, token_label, write_text
from . import add_source_arguments, load_model_and_tokenizer, output_folder, positive_int

if TYPE_CHECKING:
    from ..analysis.svd import SingularPairWords
    from ..tokenizer import Tokenizer


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `svd` subcommand."""
    parser = subparsers.add_parser(
        "svd", help="experiment 3: singular vectors of each head's W_QK and W_VO as words",
        description="Tables 'Rank | top-k left words | top-k right words' for the top singular pairs of W_QK "
                    "(both sides vs ln_1(E)) and W_VO (input vs ln_1(E), output vs E), signs fixed by the "
                    "largest match; key-bias words; cumulative singular-value plots (PNG, with --out).")
    add_source_arguments(parser)
    parser.add_argument("--blocks", type=int, nargs="+", metavar="L",
                        help="blocks (default: 0 5 11, clipped to the model's blocks)")
    parser.add_argument("--heads", type=int, nargs="+", metavar="H", help="heads (default: all)")
    parser.add_argument("--circuits", nargs="+", choices=["QK", "VO"], default=["QK", "VO"])
    parser.add_argument("--pairs", type=positive_int, default=20, help="singular pairs per table, at most d_head (default: 20)")
    parser.add_argument("-k", type=positive_int, default=3, help="words per singular vector (default: 3)")
    parser.add_argument("--bias-words", type=positive_int, default=5, help="words per side of the key-bias probe (default: 5)")
    parser.add_argument("--format", choices=["text", "markdown", "latex"], default="text", help="printed table style")
    return parser


def pair_table(pairs: Sequence[SingularPairWords], tokenizer: Tokenizer) -> tuple[list[str], list[list]]:
    """Header and rows of one head's table."""
    words = lambda tokens: ", ".join(token_label(tokenizer, t) for t in tokens)  # noqa: E731
    return (["Rank", "σ", "left words", "right words"],
            [[p.rank, p.singular_value, words(p.left), words(p.right)] for p in pairs])


def run(args: argparse.Namespace) -> int:
    """Print every table, or write them (.md, .tex, .txt per block and circuit, one .csv) and the plots."""
    from ..analysis.circuits import check_block, check_head, ln_1_embeddings
    from ..analysis.probe import default_blocks
    from ..analysis.svd import cumulative_share, head_svd, key_bias_words, plot_singular_values, singular_pair_words

    if args.out:
        output_folder(args.out)
    model, tokenizer = load_model_and_tokenizer(args)
    blocks = args.blocks if args.blocks is not None else default_blocks(model.config.n_layer)
    heads = args.heads if args.heads is not None else list(range(model.config.n_head))
    for layer in blocks:
        check_block(model, layer)
    for head in heads:
        check_head(model, head)

    styles = {"md": "markdown", "tex": "latex", "txt": "text"}
    csv_rows, written = [], []
    for layer in blocks:
        sphere = ln_1_embeddings(model, layer)  # Ẽ, shared by every head of the block
        for circuit in args.circuits:
            documents = {suffix: [] for suffix in styles}
            shares = {}
            for head in heads:
                svd = head_svd(model, layer, head, circuit, sphere)
                shares[head] = cumulative_share(svd.singular_values)
                pairs = singular_pair_words(model, svd, args.pairs, args.k, sphere)
                caption = f"W_{circuit} singular vectors, block {layer}, head {head}"
                header, rows = pair_table(pairs, tokenizer)
                if not args.out:
                    print(format_table(header, rows, args.format, caption))
                for suffix, style in styles.items():
                    documents[suffix].append(format_table(header, rows, style, caption))
                csv_rows += [[circuit, layer, head, p.rank, p.singular_value, side, i, t, tokenizer.decode([t])]
                             for p in pairs for side, tokens in (("left", p.left), ("right", p.right))
                             for i, t in enumerate(tokens)]
            if args.out:
                stem = f"svd_block{layer}_{circuit.lower()}"
                for suffix, parts in documents.items():
                    written.append(write_text(args.out / f"{stem}.{suffix}", "\n".join(parts)))
                written.append(plot_singular_values(shares, args.out / f"{stem}_cumulative.png",
                                                    f"W_{circuit}, block {layer}: cumulative singular values"))

        bias = [key_bias_words(model, layer, head, args.bias_words, sphere) for head in heads]
        words = lambda tokens: ", ".join(token_label(tokenizer, t) for t in tokens)  # noqa: E731
        header, rows = ["head", "+ keys", "− keys"], [[b.head, words(b.positive), words(b.negative)] for b in bias]
        caption = f"key-bias direction b_Q W_Kᵀ/√d_head against ln_1(E), block {layer}"
        if args.out:
            for suffix, style in (("md", "markdown"), ("tex", "latex")):
                written.append(write_text(args.out / f"svd_block{layer}_key_bias.{suffix}",
                                          format_table(header, rows, style, caption)))
        else:
            print(format_table(header, rows, args.format, caption))
    if args.out:
        header = ["circuit", "block", "head", "rank", "singular_value", "side", "word_rank", "token", "text"]
        written.append(write_text(args.out / "svd.csv", format_csv(header, csv_rows)))
        print("\n".join(["written:", *(f"  {p}" for p in written)]))
    return 0
