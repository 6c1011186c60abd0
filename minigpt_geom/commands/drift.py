"""`minigpt-geom drift CORPUS`: experiment 5, per layer the mean of LN_f(x_l[t]) · (e_{t+1} − e_t) over a corpus."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import add_model_arguments, load_model_and_tokenizer


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `drift` subcommand."""
    parser = subparsers.add_parser("drift", help="experiment 5: per-layer drift from the current word to the next")
    parser.add_argument("corpus", help="a text file or a folder of text files (read as a stream)")
    add_model_arguments(parser)
    parser.add_argument("-o", "--out", default="drift", help="output folder for drift.csv and drift.png (default: drift)")
    parser.add_argument("--pattern", default="*.txt", help="files to read under a folder (default: *.txt)")
    parser.add_argument("--context", type=int, default=None, help="window length in tokens (default: the model's context)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default: 4)")
    parser.add_argument("--max-windows", type=int, default=None, help="stop after this many windows")
    parser.add_argument("--no-logprobs", action="store_true",
                        help="skip log p(next), log p(current): they need every layer's full softmax (~3x the time)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Stream the corpus through the model; print the per-layer table, write drift.csv and drift.png."""
    from tqdm import tqdm

    from ..analysis import plots
    from ..analysis.drift import corpus_drift, corpus_files, corpus_windows, drift_rows, format_drift
    from ..analysis.lens import write_csv
    from ..errors import InputError

    files = corpus_files(args.corpus, args.pattern)
    model, tokenizer = load_model_and_tokenizer(args)
    model = model.to(args.device)
    context = args.context or model.config.n_ctx
    if not 2 <= context <= model.config.n_ctx:
        raise InputError(f"--context must be between 2 and the model's context {model.config.n_ctx}, got {context}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    total = sum(path.stat().st_size for path in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"drift over {len(files)} file(s)") as progress:
        windows = corpus_windows(files, tokenizer, context, progress=progress)
        result = corpus_drift(model, windows, batch_size=args.batch_size, logprobs=not args.no_logprobs,
                              max_windows=args.max_windows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(format_drift(result))
    print(f"wrote {write_csv(drift_rows(result), out / 'drift.csv')}")
    print(f"wrote {plots.save_figure(plots.drift_figure(result), out / 'drift.png')}")
    return 0
