"""Subcommands of `minigpt-geom`, one module each (cli.COMMANDS lists them), and the arguments they share."""

from __future__ import annotations

import argparse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--weights SOURCE and --tokenizer SOURCE (default: the weights source)."""
    parser.add_argument("--weights", default="gpt2", metavar="SOURCE",
                        help="preset, hub id, directory or .safetensors file (default: gpt2)")
    parser.add_argument("--tokenizer", default=None, metavar="SOURCE",
                        help="where vocab.json and merges.txt are (default: the weights source)")


def load_model_and_tokenizer(args: argparse.Namespace):
    """(GPT2, Tokenizer) from --weights and --tokenizer."""
    from ..analysis import load_model_and_tokenizer as load

    return load(args.weights, args.tokenizer)
