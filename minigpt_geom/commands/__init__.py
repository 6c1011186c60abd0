"""Subcommands of `minigpt-geom`, one module each (cli.COMMANDS lists them), and the arguments they share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..model import GPT2
    from ..tokenizer import Tokenizer


def positive_int(text: str) -> int:
    """argparse type for counts: an integer ≥ 1, or argparse's one-line usage error naming the option."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--weights SOURCE and --tokenizer SOURCE (default: the weights source)."""
    parser.add_argument("--weights", default="gpt2", metavar="SOURCE",
                        help="preset, hub id, directory or .safetensors file (default: gpt2)")
    parser.add_argument("--tokenizer", default=None, metavar="SOURCE",
                        help="where vocab.json and merges.txt are (default: the weights source)")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """--weights, --tokenizer and -o/--out, shared by the weight-analysis commands."""
    add_model_arguments(parser)
    parser.add_argument("-o", "--out", type=Path, metavar="DIR", help="write the tables (and plots) into DIR")


def load_model_and_tokenizer(args: argparse.Namespace) -> tuple[GPT2, Tokenizer]:
    """(GPT2, Tokenizer) from --weights and --tokenizer."""
    from ..analysis import load_model_and_tokenizer as load

    return load(args.weights, args.tokenizer)


def output_folder(path: str | os.PathLike) -> Path:
    """The folder -o names, created if missing; InputError if it is a file or cannot be created."""
    from ..errors import InputError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"-o {path} is a file: give a folder to write the outputs into")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the output folder {path}: {error.strerror or error}") from None
    return path
