"""`minigpt-geom drift CORPUS`: experiment 5, per layer and position the mean of LN_f(x_l[t]) · (e_{t+1} − e_t)."""

from __future__ import annotations

import argparse
from itertools import islice
from pathlib import Path

from .arguments import (add_command, path_text, add_figure_arguments, add_model_arguments, add_output_argument,
                        add_pattern_argument, positive_int, whole_number)
from .loading import load_model_and_tokenizer, processes_for
from .outputs import (output_file, output_folder, progress_bar, report_written, require_matplotlib, staged_outputs,
                      write_figure)

from .prepare import add_backend_argument, corpus_options

SUMMARY = ("experiment 5: drift from the current word to the next, per layer and position, over a corpus read as "
           "a stream")


def context_length(text: str) -> int:
    """argparse type for --context: a window of at least 2 tokens (one pair); the model caps it."""
    value = whole_number(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (a window needs a next word), got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `drift` subcommand."""
    parser = add_command(subparsers, "drift", SUMMARY)
    parser.add_argument("corpus", type=path_text, help="a text file, or a folder whose files matching --pattern are read")
    add_model_arguments(parser)
    add_output_argument(parser, "drift.csv, drift_by_position.csv and their figures", default="drift")
    add_pattern_argument(parser)
    parser.add_argument("--context", type=context_length, default=None,
                        help="window length in tokens (default: the model's context)")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="windows per forward pass (default: 4)")
    parser.add_argument("--max-windows", type=positive_int, default=None,
                        help="stop after this many windows of the corpus (in all: torchrun's processes share them out)")
    parser.add_argument("--logprobs", action="store_true",
                        help="also log p(next), log p(current) per layer: every layer's full-vocabulary softmax, "
                             "measured at 5.9x a plain forward pass against 1.14x without (124M shape, the default "
                             "4 x 1024 tokens a batch, a 2-core CPU; bench/analyses.py --only drift)")
    add_backend_argument(parser)
    add_figure_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Stream the corpus through the model; print the per-layer table, write the CSVs and figures."""
    from ..text.corpus import corpus_bytes, corpus_files, corpus_windows
    from ..text.fast_tokenizer import corpus_tokenizer
    from ..analysis.drift import corpus_drift, drift_position_rows, drift_rows, format_drift
    from ..analysis.tables import Table, write_csv
    from ..memory import check_fits
    from ..errors import InputError

    require_matplotlib(args)
    with processes_for(args) as processes:  # under torchrun: this process's rank, device and share of the work
        args.device, args.quiet = str(processes.device), args.quiet or not processes.main
        with corpus_options():
            files = corpus_files(args.corpus, args.pattern)
        if args.max_windows is None:  # each process streams its share of the files (windows never cross files)
            files, dealt = files[processes.rank::processes.world], (0, None, 1)
        else:  # the first --max-windows windows one process would read, dealt out in turn: window i to rank i % N
            dealt = (processes.rank, args.max_windows, processes.world)
        out = output_folder(args.out)
        model, tokenizer = load_model_and_tokenizer(args, announce=processes.main)
        with corpus_options():  # the fast tokenizer where it gives the reference's ids on a sample of the corpus
            source = args.tokenizer or (Path(args.weights).parent if Path(args.weights).is_file() else args.weights)
            tokenizer = corpus_tokenizer(source, args.tokenizer_backend, files, tokenizer)
        context = args.context or model.config.n_ctx
        if context > model.config.n_ctx:
            raise InputError(f"--context must be at most the model's context {model.config.n_ctx}, got {context}")
        # a batch's logits, their softmax and its logarithm, [B, T, V] each, beside the traced states
        per_token = 3 * model.config.vocab_size + 2 * (model.config.n_layer + 1) * model.config.n_embd
        check_fits(f"--batch-size {args.batch_size}", args.batch_size * context * per_token * 4,
                   model.wte.weight.device)
        with progress_bar(args, corpus_bytes(files), f"drift over {len(files)} file(s)", unit="B") as bar:
            windows = islice(corpus_windows(files, tokenizer, context, progress=bar), *dealt)
            result = corpus_drift(model, windows, batch_size=args.batch_size, logprobs=args.logprobs)
    if not processes.main:  # rank 0 prints and writes the merged statistics
        return 0
    print(format_drift(result))
    with staged_outputs(out) as stage:
        written = [
            write_csv(output_file(stage, "drift.csv"), Table.from_records(drift_rows(result))),
            write_csv(output_file(stage, "drift_by_position.csv"), Table.from_records(drift_position_rows(result))),
        ]
        if not args.no_plot:
            from ..analysis import plots

            written += [
                write_figure(plots.drift_figure(result), output_file(stage, f"drift.{args.format}"), args.dpi),
                write_figure(plots.drift_position_figure(result),
                             output_file(stage, f"drift_by_position.{args.format}"), args.dpi),
            ]
    report_written(out, written)
    return 0
