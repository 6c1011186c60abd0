"""`minigpt-geom report "text" -o report.html`: one self-contained HTML page of a text's geometry."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .arguments import (add_command, path_text, add_dpi_argument, add_highlight_arguments, add_model_arguments, add_text_argument,
                        index, positive_int)
from .loading import load_model_and_tokenizer
from .outputs import make_output_folder, output_file, output_folder, progress_bar, require_matplotlib

SUMMARY = "an HTML page: trajectories (rotatable 3-D), logit lens, norms, attention, drift, patching, attribution"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `report` subcommand."""
    parser = add_command(subparsers, "report", SUMMARY)
    add_text_argument(parser)
    add_model_arguments(parser)
    add_highlight_arguments(parser)
    parser.add_argument("-o", "--out", default="report.html", type=path_text, metavar="FILE",
                        help="the HTML file to write, or a folder (existing, or ending in /) for report.html "
                             "(default: report.html)")
    parser.add_argument("--layer", type=index, default=0, metavar="L",
                        help="layer of the attention pattern shown (default: 0)")
    parser.add_argument("--head", type=index, default=0, metavar="H",
                        help="head of the attention pattern shown (default: 0)")
    parser.add_argument("--top-k", type=positive_int, default=5, help="words shown per layer (default: 5)")
    parser.add_argument("--corrupted", metavar="TEXT",
                        help="a text of the same number of tokens to patch into, for the patching map (default: the "
                             "text with the chosen word swapped for its nearest word)")
    add_dpi_argument(parser)
    return parser


def report_path(out: str) -> Path:
    """The file to write: -o itself, or report.html inside it when it is a folder or ends in a separator."""
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.is_dir():
        return path / "report.html"
    return path


def run(args: argparse.Namespace) -> int:
    """Build the page and write it."""
    from ..analysis.report import REPORT_STEPS, build_report
    from ..io.files import write_text

    require_matplotlib(args)
    path = report_path(args.out)
    folder = output_folder(path.parent)
    with progress_bar(args, 1 + REPORT_STEPS, "report") as bar:
        model, tokenizer = load_model_and_tokenizer(args)
        bar.update()
        page = build_report(model, tokenizer, args.text, word=args.word, position=args.position, layer=args.layer,
                            head=args.head, top_k=args.top_k, dpi=args.dpi, corrupted=args.corrupted,
                            progress=bar)
    make_output_folder(folder)
    written = write_text(output_file(folder, path.name), page)
    print(f"wrote {written} ({len(page) / 1e6:.1f} MB)")
    return 0
