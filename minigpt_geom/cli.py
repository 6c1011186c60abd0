"""The `minigpt-geom` command line: one subcommand a module, each with `register(subparsers)` and `run(args)`.

Errors of this package (missing weights, bad checkpoints, bad input) are printed as one line, exit code 2."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Subcommand modules under minigpt_geom/commands/, in the order `--help` lists them.
COMMANDS = ["verify", "norms", "generate", "embeddings", "probe", "svd", "qk", "lens", "trajectory", "drift", "report",
            "prepare", "init", "train", "remove_ln"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="minigpt-geom", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"minigpt_geom.commands.{name}")
        module.register(subparsers).set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    from .errors import MiniGPTGeomError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse has already printed: its exit code
        return stop.code
    try:
        return args.run(args) or 0
    except MiniGPTGeomError as error:
        print(f"minigpt-geom {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early (`| head`): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
