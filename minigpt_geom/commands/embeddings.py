"""`minigpt-geom embeddings`: experiment 1, the word embeddings against layer norm and ln_f's reach."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..analysis import format_csv, format_table, token_label, write_text
from . import add_source_arguments, load_model_and_tokenizer, output_folder, positive_int

if TYPE_CHECKING:
    from ..analysis.embeddings import RankedWord, SphereDistance
    from ..tokenizer import Tokenizer


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `embeddings` subcommand."""
    parser = subparsers.add_parser(
        "embeddings", help="experiment 1: E vs layer norm; words ranked by how easily ln_f reaches them",
        description="(a) L2 and cosine distance of E (as is, centred, scaled, both) to layer_norm(E); "
                    "(b) top and bottom words by ‖e‖, ‖γ⊙e‖, ‖e‖+β·e, ‖γ⊙e‖+β·e, the bound "
                    "√d‖γ⊙e‖+β·e and the tight bound √d‖centre(γ⊙e)‖+β·e (ln_f's γ, β).")
    add_source_arguments(parser)
    parser.add_argument("-k", type=positive_int, default=5, help="words at the top and at the bottom (default: 5)")
    return parser


def distance_table(rows: Sequence[SphereDistance]) -> tuple[list[str], list[list]]:
    """Header and rows of table (a)."""
    header = ["setting", "L2 mean", "L2 std", "cosine distance mean", "cosine distance std"]
    return header, [[r.setting, r.l2_mean, r.l2_std, r.cosine_mean, r.cosine_std] for r in rows]


def reach_table(ranked: Sequence[RankedWord], tokenizer: Tokenizer) -> tuple[list[str], list[list]]:
    """Header and rows of table (b), wide: one column per measure, cells "'word' value"."""
    from ..analysis.embeddings import MEASURES

    positions = list(dict.fromkeys(r.position for r in ranked))
    cell = {(r.measure, r.position): f"{token_label(tokenizer, r.token)} {r.value:.3f}" for r in ranked}
    return ["", *MEASURES.values()], [[p, *(cell[m, p] for m in MEASURES)] for p in positions]


def run(args: argparse.Namespace) -> int:
    """Print both tables; with --out also write them as .md, .txt and .csv."""
    from ..analysis.embeddings import MEASURES, reachability, sphere_distances, top_and_bottom

    if args.out:
        output_folder(args.out)
    model, tokenizer = load_model_and_tokenizer(args)
    distances, ranked = sphere_distances(model), top_and_bottom(reachability(model), args.k)
    tables = {
        "embeddings_sphere_distance": ("(a) distance to layer_norm(E), over the vocabulary",
                                       *distance_table(distances)),
        "embeddings_reach": ("(b) words ranked with ln_f's γ, β", *reach_table(ranked, tokenizer)),
    }
    for caption, header, rows in tables.values():
        print(format_table(header, rows, "text", caption))
    if args.out:
        for name, (caption, header, rows) in tables.items():
            write_text(args.out / f"{name}.md", format_table(header, rows, "markdown", caption))
            write_text(args.out / f"{name}.txt", format_table(header, rows, "text", caption))
        write_text(args.out / "embeddings_sphere_distance.csv", format_csv(*distance_table(distances)))
        long = [[r.measure, MEASURES[r.measure], r.position, r.token, tokenizer.decode([r.token]), r.value]
                for r in ranked]
        write_text(args.out / "embeddings_reach.csv",
                   format_csv(["measure", "formula", "position", "token", "text", "value"], long))
        print(f"tables written to {args.out}/embeddings_*.{{md,txt,csv}}")
    return 0
