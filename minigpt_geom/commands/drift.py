"""`minigpt-geom drift CORPUS`: experiment 5, per layer and position the mean of LN_f(x_l[t]) · (e_{t+1} − e_t)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..corpus import DEFAULT_PATTERN
from . import (add_command, add_figure_arguments, add_model_arguments, add_output_argument, load_model_and_tokenizer,
               make_output_folder, output_file, output_folder, positive_int, progress_bar, report_written,
               processes_for, require_matplotlib, whole_number, write_figure)
from .prepare import add_backend_argument, corpus_options


def context_length(text: str) -> int:
    """argparse type for --context: a window of at least 2 tokens (one pair); the model caps it."""
    value = whole_number(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (a window needs a next word), got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `drift` subcommand."""
    parser = add_command(subparsers, "drift", "experiment 5: drift from the current word to the next, per layer "
                         "and position, over a corpus read as a stream")
    parser.add_argument("corpus", help=f"a text file, or a folder whose files matching --pattern are read "
                                       f"(default pattern {DEFAULT_PATTERN!r})")
    add_model_arguments(parser)
    add_output_argument(parser, "drift.csv, drift_by_position.csv and their figures", default="drift")
    parser.add_argument("--pattern", default=DEFAULT_PATTERN,
                        help=f"files to read under a folder, searched recursively (default: {DEFAULT_PATTERN})")
    parser.add_argument("--context", type=context_length, default=None,
                        help="window length in tokens (default: the model's context)")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="windows per forward pass (default: 4)")
    parser.add_argument("--max-windows", type=positive_int, default=None, help="stop after this many windows (of each process, under torchrun)")
    parser.add_argument("--logprobs", action="store_true",
                        help="also log p(next), log p(current) per layer: every layer's full-vocabulary softmax, "
                             "LOGPROB_COST (bench/analyses.py --only drift)")
    add_backend_argument(parser)
    add_figure_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Stream the corpus through the model; print the per-layer table, write the CSVs and figures."""
    from ..corpus import corpus_bytes, corpus_files, corpus_windows
    from ..fast_tokenizer import corpus_tokenizer
    from ..analysis.drift import corpus_drift, drift_position_rows, drift_rows, format_drift
    from ..analysis.tables import Table, write_csv
    from ..errors import InputError

    require_matplotlib(args)
    with processes_for(args) as processes:  # under torchrun: this process's rank, device and share of the files
        args.device, args.quiet = str(processes.device), args.quiet or not processes.main
        with corpus_options({"pattern": "--pattern"}):
            files = corpus_files(args.corpus, args.pattern)[processes.rank::processes.world]  # windows never cross files
        out = output_folder(args.out)
        model, tokenizer = load_model_and_tokenizer(args)
        with corpus_options():  # the fast tokenizer where it gives the reference's ids on a sample of the corpus
            source = args.tokenizer or (Path(args.weights).parent if Path(args.weights).is_file() else args.weights)
            tokenizer = corpus_tokenizer(source, args.tokenizer_backend, files, tokenizer)
        context = args.context or model.config.n_ctx
        if context > model.config.n_ctx:
            raise InputError(f"--context must be at most the model's context {model.config.n_ctx}, got {context}")
        with progress_bar(args, corpus_bytes(files), f"drift over {len(files)} file(s)", unit="B") as bar:
            windows = corpus_windows(files, tokenizer, context, progress=bar)
            result = corpus_drift(model, windows, batch_size=args.batch_size, logprobs=args.logprobs,
                                  max_windows=args.max_windows)
    if not processes.main:  # rank 0 prints and writes the merged statistics
        return 0
    print(format_drift(result))
    make_output_folder(out)
    written = [
        write_csv(output_file(out, "drift.csv"), Table.from_records(drift_rows(result))),
        write_csv(output_file(out, "drift_by_position.csv"), Table.from_records(drift_position_rows(result))),
    ]
    if not args.no_plot:
        from ..analysis import plots

        written += [
            write_figure(plots.drift_figure(result), output_file(out, f"drift.{args.format}"), args.dpi),
            write_figure(plots.drift_position_figure(result), output_file(out, f"drift_by_position.{args.format}"),
                         args.dpi),
        ]
    report_written(written)
    return 0
