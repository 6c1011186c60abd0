"""`minigpt-geom trajectory "text"`: experiment 4, each word's path LN_f(x_0) … LN_f(x_L) in 3-D, with its logit lens."""

from __future__ import annotations

import argparse

from . import add_model_arguments, load_model_and_tokenizer, output_folder, positive_int
from .lens import add_highlight_arguments

PAPER_PROMPT = "To kill two birds with one stone"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `trajectory` subcommand."""
    parser = subparsers.add_parser("trajectory", help="experiment 4: the words' trajectories on the sphere, in 3-D")
    parser.add_argument("text", nargs="?", default=PAPER_PROMPT, help=f"the text (default: {PAPER_PROMPT!r})")
    add_model_arguments(parser)
    add_highlight_arguments(parser)
    parser.add_argument("-o", "--out", default="trajectory",
                        help="output folder for lens.csv, trajectory.csv, trajectory.png, lens_grid.png (default: trajectory)")
    parser.add_argument("--top-k", type=positive_int, default=5, help="words shown per layer (default: 5)")
    parser.add_argument("--umap", action="store_true", help="project with UMAP (needs umap-learn) instead of PCA")
    parser.add_argument("--umap-fit", choices=("vocab", "points"), default="vocab",
                        help="fit UMAP on LN_f of the first 10,000 embeddings (vocab, the paper's) or on the points")
    parser.add_argument("--seed", type=int, default=0, help="UMAP random state (PCA needs none)")
    parser.add_argument("--all-positions", action="store_true", help="print the lens table of every position, "
                        "not only the highlighted one")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the lens table; write the CSVs and the figures."""
    from ..analysis import plots
    from ..analysis.lens import format_lens, lens_rows, logit_lens, token_words, trace_text, write_csv
    from ..analysis.trajectory import choose_highlight, trajectory_rows, word_trajectory

    out = output_folder(args.out)
    model, tokenizer = load_model_and_tokenizer(args)
    ids, _, trace = trace_text(model, tokenizer, args.text)
    decode = lambda i: tokenizer.decode([i])  # noqa: E731
    words = token_words(tokenizer, ids)
    highlight = choose_highlight(words, args.word, args.position)
    lens = logit_lens(model, trace, k=args.top_k)
    trajectory = word_trajectory(
        model, trace.states, words, lens.prediction[0].tolist(), decode, highlight=highlight,
        method="umap" if args.umap else "pca", umap_fit=args.umap_fit, seed=args.seed,
    )
    print(format_lens(lens, words, decode, positions=None if args.all_positions else [highlight]))
    if args.all_positions:  # otherwise the table above is the highlighted word's alone and says so
        print(f"highlighted: {words[highlight]!r} at position {highlight} predicts {trajectory.prediction_word!r}")
    written = [
        write_csv(lens_rows(lens, words, decode), out / "lens.csv"),
        write_csv(trajectory_rows(trajectory), out / "trajectory.csv"),
        plots.save_figure(plots.trajectory_figure(trajectory), out / "trajectory.png"),
        plots.save_figure(plots.lens_grid_figure(lens, words, decode), out / "lens_grid.png"),
    ]
    for path in written:
        print(f"wrote {path}")
    return 0
