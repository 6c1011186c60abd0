"""The `minigpt-geom` command line: the subcommands, in the order `--help` lists them, and one error policy.

Expected failures (missing weights, bad checkpoints, bad input or arguments, outputs that cannot be written)
are printed as one line on stderr, exit code 2."""

from __future__ import annotations

import os
import sys

from .commands import (Parser, UsageError, compare, drift, embeddings, generate, init, lens, norms, prepare, probe,
                       qk, remove_ln, report, svd, train, trajectory, verify)

COMMANDS = (verify, norms, generate, embeddings, probe, svd, qk, lens, trajectory, drift, report, compare,
            prepare, init, train, remove_ln)
DESCRIPTION = ("GPT-2 whose forward pass reports its own geometry: layer norm puts every word on a sphere and "
               "the layers move it along (Traveling Words, arXiv 2309.07315). Each command runs one analysis, "
               "or trains; `minigpt-geom COMMAND --help` describes it.")


def version() -> str:
    """The installed package's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("minigpt-geom")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> Parser:
    """The argument parser with every subcommand registered."""
    parser = Parser(prog="minigpt-geom", description=DESCRIPTION, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"minigpt-geom {version()}",
                        help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = command.register(subparsers)
        sub.set_defaults(run=command.run, parser=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script and of `python -m minigpt_geom`."""
    from .errors import MiniGPTGeomError

    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:  # reported by the subcommand, whose options they were meant to be
            args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except UsageError as error:
        print(f"{error.prog}: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as stop:  # --help or --version, printed: their exit code
        return stop.code
    try:
        return args.run(args) or 0
    except BrokenPipeError:  # output piped into a reader that stopped early (`| head`): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (MiniGPTGeomError, OSError) as error:  # OSError: a file that cannot be read or written
        print(f"minigpt-geom {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
