"""`minigpt-geom compare "text" --against SOURCE [SOURCE ...]`: models on the same text, layer by layer."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .arguments import (add_command, add_figure_arguments, add_model_arguments, add_output_argument, add_text_argument,
                        path_text, utf8_text, word)
from .loading import load_model_and_tokenizer
from .outputs import checked_output, output_file, progress_bar, report_written, staged_outputs, write_figure

SUMMARY = "models side by side on one text: norms, radii, angular path, logit lens, trajectories in one 3-D frame"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `compare` subcommand."""
    parser = add_command(subparsers, "compare", SUMMARY,
                         "Run the text through --weights and every --against model (e.g. one small model trained "
                         "with each norm variant, or a model and its LN-free fine-tune). Each number is each "
                         "model's own, in its own variant's geometry; the 3-D view fits one PCA on all of them.")
    add_text_argument(parser, "the text to run through every model")
    add_model_arguments(parser)
    parser.add_argument("--against", required=True, nargs="+", type=path_text, metavar="SOURCE",
                        help="the other models (presets, hub ids, directories or .safetensors files); same tokenizer")
    parser.add_argument("--mixed-vocabularies", action="store_true",
                        help="compare models whose vocabularies differ, feeding each the ids of --weights' tokenizer "
                             "(otherwise refused: the same ids are other words to them)")
    parser.add_argument("--labels", nargs="+", metavar="NAME", type=utf8_text,
                        help="a name for each model, --weights first (default: each source's folder name)")
    parser.add_argument("--word", type=word, help="the word whose paths are drawn bold (default: ' one', else the last)")
    add_output_argument(parser, "compare.csv and compare.FORMAT", default="compare")
    add_figure_arguments(parser)
    return parser


def check_same_vocabulary(source: str, loaded: tuple, first: str, first_loaded: tuple) -> None:
    """InputError unless the model of `source` and its tokenizer have the vocabulary of the first model: the
    same number of words and the same id for each token."""
    (model, words), (first_model, first_words) = loaded, first_loaded
    if model.config.vocab_size != first_model.config.vocab_size or words.encoder != first_words.encoder:
        raise InputError(f"{source} has another vocabulary than {first} ({model.config.vocab_size:,} words and "
                         f"{words.n_vocab:,} tokens, against {first_model.config.vocab_size:,} and "
                         f"{first_words.n_vocab:,}, or other ids): the text's ids would be other words to it; compare "
                         f"models of one tokenizer, or pass --mixed-vocabularies")


def run(args: argparse.Namespace) -> int:
    """Print the per-layer table of every model; write compare.csv (and the figure)."""
    from ..analysis.compare import compare_models, unique_labels
    from ..analysis.tables import Table, write_csv

    out = checked_output(args)
    sources = [args.weights, *args.against]
    names = unique_labels(sources, args.labels)
    if not args.no_plot:  # the legend draws each label as mathtext: a parse error would end the figure
        from ..analysis.plots import mathtext_problem

        for label in args.labels or []:
            if problem := mathtext_problem(label):
                raise InputError(f"--labels {label!r} is not valid mathtext ({problem}): write a literal $ as \\$")
    with progress_bar(args, len(sources) + 1, "compare") as bar:
        model, tokenizer = load_model_and_tokenizer(args)
        models = {names[0]: model}
        bar.update()
        for name, source in zip(names[1:], args.against):
            models[name], words = load_model_and_tokenizer(argparse.Namespace(**{**vars(args), "weights": source}))
            if not args.mixed_vocabularies:
                check_same_vocabulary(source, (models[name], words), args.weights, (model, tokenizer))
            bar.update()
        comparison = compare_models(models, tokenizer, args.text, args.word)
        table = Table.from_records(comparison.rows, f"{', '.join(names)}: means over the text's tokens")
        print(table.format("text"))
        if comparison.paths is None:
            print("the models differ in width d: no shared 3-D frame is drawn, only the per-layer panels")
        with staged_outputs(out) as stage:
            written = [write_csv(output_file(stage, "compare.csv"), table)]
            if not args.no_plot:
                from ..analysis import plots

                written.append(write_figure(plots.compare_figure(comparison),
                                            output_file(stage, f"compare.{args.format}"), args.dpi))
        bar.update()
    report_written(out, written)
    return 0
