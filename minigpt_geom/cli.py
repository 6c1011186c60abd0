"""The `minigpt-geom` command line: the subcommands, in the order `--help` lists them, and one error policy.

Expected failures (missing weights, bad checkpoints, bad input or arguments, outputs that cannot be written,
memory that runs out despite the estimates, a lost torchrun peer) are printed as one line on stderr, exit code 2.
Output that the terminal's encoding cannot show is written as Python escapes (\u2016), never an error. Nothing
here imports torch: `--help`, `--version` and argument
errors answer at once, and only the command that runs builds its full parser and imports what it needs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import warnings
from types import ModuleType
from typing import Callable, Collection

from .commands.arguments import JoinWords, Parser, UsageError
from .errors import Note

COMMANDS = ("verify", "norms", "generate", "embeddings", "probe", "svd", "qk", "lens", "trajectory", "drift", "report",
            "compare", "patch", "ablate", "attribute", "steer", "rotate", "tokenizer", "prepare", "init", "train",
            "remove-ln")  # each the module commands/<name>.py, `-` as `_`
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


class PrintVersion(argparse.Action):
    """--version, which reads the installed version only when asked (importlib.metadata is slow to import)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        """Print `minigpt-geom VERSION` and exit."""
        print(f"minigpt-geom {version()}")
        parser.exit()


def command_module(name: str) -> ModuleType:
    """The module of subcommand `name` (`remove-ln` -> minigpt_geom.commands.remove_ln)."""
    return importlib.import_module(f".commands.{name.replace('-', '_')}", __package__)


def build_parser(full: Collection[str] = COMMANDS) -> Parser:
    """The argument parser with the subcommands `full` names registered with their options (all by default);
    the others are listed by their summary alone, so that a parser costs only what its command needs."""
    parser = Parser(prog="minigpt-geom", description=DESCRIPTION, allow_abbrev=False)
    parser.add_argument("--version", action=PrintVersion, help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = command_module(name)
        if name in full:
            sub = module.register(subparsers)
            sub.set_defaults(run=module.run, parser=sub)
        else:
            subparsers.add_parser(name, help=module.SUMMARY)
    return parser


def chosen_command(argv: list[str]) -> list[str]:
    """The subcommand argv names, as a list of none or one: its first word that is not an option (the top
    level's options take no value)."""
    return [word for word in argv if not word.startswith("-")][:1]


def stray_words_hint(args: argparse.Namespace, extra: list[str]) -> str:
    """What to do when words of a text came after an option (`lens To kill --top-k 3 two birds`)."""
    texts = [a.dest for a in args.parser._actions if isinstance(a, JoinWords)]
    if texts and any(not word.startswith("-") for word in extra):
        return f" (the {texts[0]}'s words go together before the options, or quote the whole {texts[0]})"
    return ""


def one_line_notes(command: str) -> Callable[..., None]:
    """A warnings.showwarning that prints this package's notes (errors.Note: an LN-free file loaded, a tokenizer
    backend not used) as one line naming the command, without the Python source path and line; other warnings
    as Python does."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if issubclass(category, Note):
            print(f"minigpt-geom {command}: note: {message}", file=sys.stderr)
        else:
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
    return show


def out_of_memory(error: BaseException) -> str | None:
    """What a failed allocation says, in one line, when `error` is one (MemoryError, torch's allocators'
    RuntimeError, CUDA's OutOfMemoryError); None for any other error."""
    text = " ".join(str(error).split())
    allocator = any(words in text.lower() for words in ("can't allocate memory", "cannot allocate memory",
                                                         "out of memory"))
    if not (isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and allocator)):
        return None
    asked = re.search(r"tried to allocate ([0-9.]+ ?[KMGT]?i?B|[0-9]+ bytes)", text)
    return "out of memory" + (f" (an allocation of {asked[1]} failed)" if asked else "")


def writable_anywhere() -> None:
    """stdout and stderr write what their encoding cannot show as escapes (PYTHONIOENCODING=ascii, a C locale),
    instead of raising UnicodeEncodeError half-way through a table."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script and of `python -m minigpt_geom`."""
    from .errors import MiniGPTGeomError

    writable_anywhere()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args, extra = build_parser(chosen_command(argv)).parse_known_args(argv)
        if extra:  # reported by the subcommand, whose options they were meant to be
            args.parser.error(f"unrecognized arguments: {' '.join(extra)}{stray_words_hint(args, extra)}")
    except UsageError as error:
        print(f"{error.prog}: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as stop:  # --help or --version, printed: their exit code
        return stop.code
    from safetensors import SafetensorError  # the Rust binding alone, no torch

    try:
        if getattr(args, "quiet", False) or not sys.stderr.isatty():
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()  # a download's bars too: on a terminal only
        with warnings.catch_warnings():
            # A note for each file loaded and each backend set aside, never hidden; none with --quiet.
            warnings.simplefilter("ignore" if getattr(args, "quiet", False) else "always", Note)
            warnings.showwarning = one_line_notes(args.command)
            return args.run(args) or 0
    except BrokenPipeError:  # output piped into a reader that stopped early (`| head`): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (MiniGPTGeomError, OSError, SafetensorError) as error:  # a file that cannot be read or written
        print(f"minigpt-geom {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (MemoryError, RuntimeError) as error:  # an allocation the size checks did not foresee (ulimit -v, …)
        if (problem := out_of_memory(error)) is None:
            raise
        print(f"minigpt-geom {args.command}: error: {problem}: choose smaller sizes or free memory", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
