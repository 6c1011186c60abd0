"""`minigpt-geom trajectory "text"`: experiment 4, each word's path LN_f(x_0) … LN_f(x_L) in 3-D, with its logit lens."""

from __future__ import annotations

import argparse

from ..errors import import_optional
from .arguments import (add_command, add_figure_arguments, add_highlight_arguments, add_model_arguments,
                        add_output_argument, add_text_argument, positive_int, seed)
from .loading import lens_of_text
from .outputs import checked_output, output_file, progress_bar, report_written, staged_outputs, write_figure

SUMMARY = "experiment 4: the words' trajectories on the sphere, in 3-D"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `trajectory` subcommand."""
    parser = add_command(subparsers, "trajectory", SUMMARY)
    add_text_argument(parser)
    add_model_arguments(parser)
    add_highlight_arguments(parser)
    add_output_argument(parser, "lens.csv, trajectory.csv, trajectory.FORMAT and lens_grid.FORMAT",
                        default="trajectory")
    parser.add_argument("--top-k", type=positive_int, default=5, help="words shown per layer (default: 5)")
    parser.add_argument("--umap", action="store_true", help="project with UMAP (needs umap-learn) instead of PCA")
    parser.add_argument("--umap-fit", choices=("vocab", "points"), default="vocab",
                        help="fit UMAP on LN_f of the first 10,000 embeddings (vocab, the paper's) or on the points")
    parser.add_argument("--seed", type=seed, default=0, help="UMAP random state (PCA needs none; default: 0)")
    parser.add_argument("--all-positions", action="store_true", help="print the lens table of every position, "
                        "not only the highlighted one")
    add_figure_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the lens table; write the CSVs and the figures."""
    from ..analysis.lens import angle_note, format_lens, lens_rows, next_word_ranks
    from ..analysis.tables import Table, write_csv
    from ..analysis.trajectory import choose_highlight, trajectory_rows, word_trajectory

    if args.umap:  # before any work, as every missing library
        import_optional("umap", "--umap", "umap-learn", "leave out --umap for PCA")
    out = checked_output(args)
    with progress_bar(args, 3 if args.no_plot else 4, "trajectory") as bar:
        model, tokenizer, words, trace, lens = lens_of_text(args, bar)
        decode = lambda i: tokenizer.decode([i])  # noqa: E731
        highlight = choose_highlight(words, args.word, args.position)
        trajectory = word_trajectory(
            model, trace.states, words, lens.prediction[0].tolist(), decode, highlight=highlight,
            method="umap" if args.umap else "pca", umap_fit=args.umap_fit, seed=args.seed,
        )
        bar.update()
        if not args.no_plot:
            from ..analysis import plots

            path_words = [decode(int(i)) for i in lens.top_ids[:, 0, highlight, 0]]  # the lens's top word per layer
            ranks = next_word_ranks(model, trace.states[:, 0], tokenizer.encode(args.text)) if len(words) > 1 else None
            figures = {"trajectory": plots.trajectory_figure(trajectory, path_words=path_words),
                       "lens_grid": plots.lens_grid_figure(lens, words, decode, next_ranks=ranks,
                                                          points=trajectory.points)}
            bar.update()
    print(format_lens(lens, words, decode, positions=None if args.all_positions else [highlight],
                      angle=angle_note(model)))
    if args.all_positions:  # otherwise the table above is the highlighted word's alone and says so
        print(f"highlighted: {words[highlight]!r} at position {highlight} predicts {trajectory.prediction_word!r}")
    with staged_outputs(out) as stage:
        written = [
            write_csv(output_file(stage, "lens.csv"), Table.from_records(lens_rows(lens, words, decode))),
            write_csv(output_file(stage, "trajectory.csv"), Table.from_records(trajectory_rows(trajectory))),
        ]
        if not args.no_plot:
            written += [write_figure(fig, output_file(stage, f"{name}.{args.format}"), args.dpi)
                        for name, fig in figures.items()]
    report_written(out, written)
    return 0
