"""`minigpt-geom report "text" -o report.html`: one self-contained HTML page of a text's geometry."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import add_model_arguments, load_model_and_tokenizer, output_folder, positive_int
from .lens import add_highlight_arguments


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `report` subcommand."""
    parser = subparsers.add_parser("report", help="an HTML page: trajectories (rotatable 3-D), logit lens, norms, attention")
    parser.add_argument("text", help="the text to run through the model")
    add_model_arguments(parser)
    add_highlight_arguments(parser)
    parser.add_argument("-o", "--out", default="report.html",
                        help="the HTML file to write, or a folder (existing, or ending in /) for report.html "
                             "(default: report.html)")
    parser.add_argument("--layer", type=int, default=0, help="layer of the attention pattern shown (default: 0)")
    parser.add_argument("--head", type=int, default=0, help="head of the attention pattern shown (default: 0)")
    parser.add_argument("--top-k", type=positive_int, default=5, help="words shown per layer (default: 5)")
    return parser


def report_path(out: str) -> Path:
    """The file to write: -o itself, or report.html inside it when it is a folder or ends in a separator."""
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.is_dir():
        path = path / "report.html"
    output_folder(path.parent)
    return path


def run(args: argparse.Namespace) -> int:
    """Build the page and write it."""
    from ..analysis.report import build_report

    out = report_path(args.out)
    model, tokenizer = load_model_and_tokenizer(args)
    page = build_report(model, tokenizer, args.text, word=args.word, position=args.position,
                        layer=args.layer, head=args.head, top_k=args.top_k)
    out.write_text(page, encoding="utf-8")
    print(f"wrote {out} ({len(page) / 1e6:.1f} MB)")
    return 0
