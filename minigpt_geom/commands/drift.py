"""`minigpt-geom drift CORPUS`: experiment 5, per layer and position the mean of LN_f(x_l[t]) · (e_{t+1} − e_t)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from . import add_model_arguments, load_model_and_tokenizer, output_folder, positive_int

if TYPE_CHECKING:
    import torch


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `drift` subcommand."""
    parser = subparsers.add_parser("drift", help="experiment 5: drift from the current word to the next, "
                                   "per layer and position")
    parser.add_argument("corpus", help="a text file or a folder of text files (read as a stream)")
    add_model_arguments(parser)
    parser.add_argument("-o", "--out", default="drift",
                        help="output folder for drift.csv, drift_by_position.csv and their plots (default: drift)")
    parser.add_argument("--pattern", default="*.txt", help="files to read under a folder (default: *.txt)")
    parser.add_argument("--context", type=int, default=None, help="window length in tokens (default: the model's context)")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="windows per forward pass (default: 4)")
    parser.add_argument("--max-windows", type=positive_int, default=None, help="stop after this many windows")
    parser.add_argument("--no-logprobs", action="store_true",
                        help="skip log p(next), log p(current): they need every layer's full softmax (~3x the time)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return parser


def usable_device(name: str) -> torch.device:
    """torch.device(name) if this machine can allocate on it, else InputError."""
    import torch

    from ..errors import InputError

    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:  # a bad name; CUDA not compiled in, no driver, no such GPU
        reason = (str(error).strip() or type(error).__name__).splitlines()[0].split(". ")[0]  # its first sentence
        raise InputError(f"--device {name!r} cannot be used here ({reason}); try --device cpu") from None
    return device


def run(args: argparse.Namespace) -> int:
    """Stream the corpus through the model; print the per-layer table, write the CSVs and figures."""
    from tqdm import tqdm

    from ..analysis import plots
    from ..analysis.drift import (corpus_drift, corpus_files, corpus_windows, drift_position_rows, drift_rows,
                                  format_drift)
    from ..analysis.lens import write_csv
    from ..errors import InputError

    device = usable_device(args.device)
    files = corpus_files(args.corpus, args.pattern)
    out = output_folder(args.out)
    model, tokenizer = load_model_and_tokenizer(args)
    model = model.to(device)
    context = args.context or model.config.n_ctx
    if not 2 <= context <= model.config.n_ctx:
        raise InputError(f"--context must be between 2 and the model's context {model.config.n_ctx}, got {context}")
    total = sum(path.stat().st_size for path in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"drift over {len(files)} file(s)") as progress:
        windows = corpus_windows(files, tokenizer, context, progress=progress)
        result = corpus_drift(model, windows, batch_size=args.batch_size, logprobs=not args.no_logprobs,
                              max_windows=args.max_windows)
    print(format_drift(result))
    written = [
        write_csv(drift_rows(result), out / "drift.csv"),
        write_csv(drift_position_rows(result), out / "drift_by_position.csv"),
        plots.save_figure(plots.drift_figure(result), out / "drift.png"),
        plots.save_figure(plots.drift_position_figure(result), out / "drift_by_position.png"),
    ]
    for path in written:
        print(f"wrote {path}")
    return 0
