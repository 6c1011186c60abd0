"""`minigpt-geom report "text" -o report.html`: one self-contained HTML page of a text's geometry."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import add_model_arguments, load_model_and_tokenizer
from .lens import add_highlight_arguments


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `report` subcommand."""
    parser = subparsers.add_parser("report", help="an HTML page: trajectories (rotatable 3-D), logit lens, norms, attention")
    parser.add_argument("text", help="the text to run through the model")
    add_model_arguments(parser)
    add_highlight_arguments(parser)
    parser.add_argument("-o", "--out", default="report.html", help="the HTML file to write (default: report.html)")
    parser.add_argument("--layer", type=int, default=0, help="layer of the attention pattern shown (default: 0)")
    parser.add_argument("--head", type=int, default=0, help="head of the attention pattern shown (default: 0)")
    parser.add_argument("--top-k", type=int, default=5, help="words shown per layer (default: 5)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Build the page and write it."""
    from ..analysis.report import build_report

    model, tokenizer = load_model_and_tokenizer(args)
    page = build_report(model, tokenizer, args.text, word=args.word, position=args.position,
                        layer=args.layer, head=args.head, top_k=args.top_k)
    out = Path(args.out)
    if out.is_dir():
        out = out / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(f"wrote {out} ({len(page) / 1e6:.1f} MB)")
    return 0
