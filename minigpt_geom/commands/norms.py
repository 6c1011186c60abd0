"""`minigpt-geom norms [SOURCE] --text "..."`: every layer-norm variant against GPT-2's own, on one text."""

from __future__ import annotations

import argparse

import torch

from ..analysis import format_table
from . import load_model_and_tokenizer


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `norms` subcommand."""
    parser = subparsers.add_parser(
        "norms", help="KL, top-1 agreement and perplexity of each layer-norm variant against the default",
        description="Swap the layer norm of every site for each registered variant (layernorm, rmsnorm, sphere, "
                    "none, ...) and compare its next-token predictions on the text with GPT-2's own.")
    parser.add_argument("weights", nargs="?", default="gpt2", metavar="SOURCE",
                        help="preset, hub id, directory or .safetensors file (default: gpt2)")
    parser.add_argument("--text", required=True, help="the text to score (at least two tokens)")
    parser.add_argument("--tokenizer", metavar="SOURCE", help="where vocab.json and merges.txt are (default: SOURCE)")
    parser.add_argument("--variants", nargs="+", help="variants to compare (default: all registered)")
    parser.add_argument("--format", choices=["text", "markdown", "latex"], default="text")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print one row per variant."""
    from ..analysis.norms import compare_norms

    model, tokenizer = load_model_and_tokenizer(args)
    idx = torch.tensor([tokenizer.encode(args.text)])
    rows = compare_norms(model, idx, args.variants)
    header = ["variant", "KL(default ‖ variant) nats", "top-1 agreement", "perplexity"]
    caption = f"{idx.shape[1]} tokens; KL and agreement per position, averaged"
    print(format_table(header, [[r.variant, r.kl_from_default, r.top1_agreement, r.perplexity] for r in rows],
                       args.format, caption), end="")
    return 0
