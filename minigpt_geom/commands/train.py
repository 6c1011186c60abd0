"""`minigpt-geom train CORPUS -o DIR`: train a new GPT-2 or fine-tune one, with any norm variant.

Without --weights or a shape it trains a small new model (4 layers, d = 64, context 64, GPT-2's tokenizer:
3.4 M parameters, most of them the embedding): its 1000 default steps take about 1.4 s of CPU time each, a few
minutes on a laptop's cores. On many processes:
`torchrun --nproc_per_node N -m minigpt_geom train …` (the same global batch)."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from dataclasses import fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import InputError
from ..training.settings import SettingError, TrainSettings, settings_from_saved
from .arguments import add_command, add_quiet_argument, folder_path, path_text, whole_number
from .loading import processes_for
from .outputs import output_folder, show_progress
from .init import add_architecture_arguments, new_model_from_arguments, set_dyt_start, wants_new_model
from .prepare import add_corpus_arguments, corpus_options, corpus_settings

if TYPE_CHECKING:
    from ..model.gpt2 import GPT2

DEFAULT_TOKENIZER = "gpt2"

SUMMARY = "train or fine-tune a GPT-2 on a text corpus"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `train` subcommand."""
    parser = add_command(subparsers, "train", SUMMARY,
                         __doc__.split(":", 1)[1].strip())
    parser.add_argument("corpus", type=path_text, help="a text file, a folder of them, or a folder `prepare` wrote")
    parser.add_argument("-o", "--out", required=True, type=folder_path, metavar="DIR",
                        help="the run's folder: checkpoint, log.csv, optimiser state")
    model = parser.add_argument_group("the model")
    model.add_argument("--weights", default=None, type=path_text, metavar="SOURCE",
                       help="fine-tune these weights (preset, hub id, directory or .safetensors file)")
    model.add_argument("--tokenizer", default=None, type=path_text, metavar="SOURCE",
                       help=f"where vocab.json and merges.txt are (default: the weights source; for a new "
                            f"model {DEFAULT_TOKENIZER})")
    add_architecture_arguments(parser, fine_tune=True)
    add_run_arguments(parser)
    data = parser.add_argument_group("the corpus")
    add_corpus_arguments(data)
    data.add_argument("--data-cache", default=None, type=path_text, metavar="DIR",
                      help="where token files of a corpus are cached (default: ~/.cache/minigpt_geom/tokens)")
    return parser


def option_type(annotation: str):
    """The argparse type of a TrainSettings field from its annotation ('int | None' -> a whole number)."""
    base = annotation.split(" |")[0]
    return {"int": whole_number, "float": float, "str": str}[base]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a run, one per TrainSettings field that has one, shared with `remove-ln`; plus --resume,
    --overwrite, --device and --quiet. Every option defaults to None: the settings' own default, or on --resume
    the saved run's."""
    run = parser.add_argument_group("the run")
    run.add_argument("--resume", action="store_true", help="continue the run saved in -o DIR, with its settings")
    run.add_argument("--overwrite", action="store_true", help="start again in a -o DIR that holds a run")
    for setting in fields(TrainSettings):
        meta = dict(setting.metadata)
        flag, text = meta.pop("flag"), meta.pop("help")
        if flag is None:
            continue
        default = "" if setting.default is None or "(default" in text else f" (default: {setting.default})"
        if setting.type == "bool":
            run.add_argument(flag, dest=setting.name, action="store_true", default=None, help=text)
        else:
            run.add_argument(flag, dest=setting.name, type=option_type(setting.type), default=None,
                             help=text + default, **meta)
    run.add_argument("--device", default="cpu", help="torch device; under torchrun, cuda uses cuda:LOCAL_RANK (default: cpu)")
    add_quiet_argument(run)


def setting_flag(name: str) -> str:
    """The option that sets TrainSettings field `name` (its own name when it has none, as `norm`)."""
    flags = {f.name: f.metadata["flag"] for f in fields(TrainSettings)}
    return flags.get(name) or f"--{name.replace('_', '-')}"


def settings_from_arguments(args: argparse.Namespace) -> TrainSettings:
    """The TrainSettings the options name (a resumed run's saved ones, changed where allowed); errors name
    the option."""
    from ..training.optimizer_state import read_saved_state

    given = {f.name: getattr(args, f.name) for f in fields(TrainSettings) if getattr(args, f.name, None) is not None}
    with options_named():
        if args.resume:
            return settings_from_saved(read_saved_state(args.out)[1], given)
        return TrainSettings(**given)


def check_outside(corpus: str, out: Path) -> None:
    """InputError when -o DIR lies inside the corpus folder: the run's own files would become training text.
    realpath, not resolve: a loop of links at -o is left for the folder's lock to refuse in one line."""
    where = Path(os.path.realpath(out))
    if Path(corpus).is_dir() and Path(os.path.realpath(corpus)) in (where, *where.parents):
        raise InputError(f"-o {out} is inside the corpus {corpus}: the run's files would be read as text; "
                         f"choose a folder outside it")


@contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """The run's warnings (ScheduleWarning) as one line on stderr each, `minigpt-geom train: warning: …`."""
    import warnings

    from ..training.loop import ScheduleWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", ScheduleWarning)
        shown = warnings.showwarning
        warnings.showwarning = lambda message, category, *where, **more: print(
            f"minigpt-geom {command}: warning: {message}", file=sys.stderr) if category is ScheduleWarning \
            else shown(message, category, *where, **more)
        yield


RESUME_OPTIONS = ("tokenizer", "pattern", "val_fraction", "val_split", "split_seed", "tokenizer_backend", "data_cache",
                  "device")  # what --resume still reads from the command line, when not the default


def continuation(args: argparse.Namespace, run_folder: Path, *keep: str) -> str:
    """Which checkpoint the run folder kept and the command that continues it (`keep`: options of the command's
    own that --resume still needs), or that it has none yet."""
    import re
    import shlex

    from ..io.checkpoint_folder import current_checkpoint

    kept = current_checkpoint(run_folder)
    step = re.match(r"step-0*(\d+)", kept.name) if kept is not None else None
    if step is None:
        return f"nothing to resume in {args.out} (no checkpoint yet): start it again"
    given = [(a.option_strings[-1], getattr(args, a.dest)) for a in args.parser._actions
             if a.dest in (*keep, *RESUME_OPTIONS) and getattr(args, a.dest) != a.default]
    words = [args.command, args.corpus, *(w for option, v in given for w in (option, str(v))),
             "-o", str(args.out), "--resume"]
    return f"{args.out} keeps the checkpoint of step {step.group(1)}; continue with: minigpt-geom {shlex.join(words)}"


@contextmanager
def resume_hint(args: argparse.Namespace, run_folder: Path, main: bool, *keep: str) -> Iterator[None]:
    """On Ctrl-C (SIGINT, which waits for a checkpoint being written): one line saying which checkpoint the run
    folder kept and the command that continues it; then the interrupt goes on (exit code 130)."""
    try:
        yield
    except KeyboardInterrupt:
        if main:
            print(f"minigpt-geom {args.command}: interrupted: {continuation(args, run_folder, *keep)}",
                  file=sys.stderr)
        raise


@contextmanager
def options_named() -> Iterator[None]:
    """A SettingError raised inside names the option, not the field (`--lr`, not `learning_rate`)."""
    try:
        yield
    except SettingError as error:
        raise InputError(f"{setting_flag(error.field)} {error.problem}") from None


def build_model(args: argparse.Namespace) -> tuple[GPT2, str]:
    """(model, tokenizer source): the run saved in --out, the weights given, or a new model."""
    from ..model.gpt2 import GPT2
    from ..text.tokenizer import Tokenizer

    new = wants_new_model(args)
    if args.resume:
        if args.weights or new or args.norm or args.dyt_alpha is not None or args.dyt_gamma is not None:
            raise InputError("--resume continues the model saved in --out: drop --weights, --init, the sizes, --norm, "
                             "--dyt-alpha and --dyt-gamma")
        return GPT2.from_pretrained(args.out), args.tokenizer or str(args.out)
    if args.weights and new:
        raise InputError("give --weights to fine-tune or --init/--n-layer … for a new model, not both")
    if args.weights:
        model = GPT2.from_pretrained(args.weights)
        if args.norm:
            model.set_norm(args.norm)
        set_dyt_start(model, args.dyt_alpha, args.dyt_gamma)
        return model, args.tokenizer or args.weights
    tokenizer = args.tokenizer or DEFAULT_TOKENIZER  # a new model: DEFAULT_SHAPE, as `init` makes it
    return new_model_from_arguments(args, Tokenizer.from_pretrained(tokenizer).n_vocab), tokenizer


def run(args: argparse.Namespace) -> int:
    """Train; under torchrun every process runs this and rank 0 writes the files."""
    from ..training.run_folder import check_new_output
    from ..training.loop import load_corpus, train

    if args.resume and args.overwrite:
        raise InputError("--resume continues the run in -o DIR, --overwrite starts it again: give one")
    settings = settings_from_arguments(args)
    check_outside(args.corpus, args.out)
    check_new_output(output_folder(args.out), resume=args.resume, overwrite=args.overwrite)  # before any work
    advice = partial(continuation, args, args.out)  # what to do when a rank is lost
    with processes_for(args, advice) as processes, options_named(), one_line_warnings(args.command):
        model, tokenizer_source = build_model(args)
        with corpus_options():  # the corpus, and on --resume the saved run's (its files, tokenizer, split)
            data = load_corpus(args.corpus, tokenizer_source, processes, cache_dir=args.data_cache, exclude=[args.out],
                               progress=show_progress(args), **corpus_settings(args))
            with resume_hint(args, args.out, processes.main):
                log = train(model, data, tokenizer_source, args.out, settings, device=processes.device,
                            resume=args.resume, overwrite=args.overwrite, progress=show_progress(args))
    if processes.main:
        print(f"step {log[-1].step}: validation loss {log[-1].val_loss:.4f}; saved in {args.out}")
    return 0
