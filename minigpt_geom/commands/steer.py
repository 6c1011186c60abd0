"""`minigpt-geom steer "prompt" --plus W --minus W --layer L`: generate with an activation-addition vector."""

from __future__ import annotations

import argparse

from .arguments import (add_command, add_experiment_outputs, add_model_arguments, add_text_argument, index,
                        non_negative, positive_int, real_number, seed, whole_number)
from .loading import load_model_and_tokenizer
from .outputs import output_folder, require_matplotlib, write_experiment

SUMMARY = "steering (ActAdd): generate with c·(x_l(plus) − x_l(minus)) added to the residual stream at block l"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `steer` subcommand."""
    parser = add_command(
        subparsers, "steer", SUMMARY,
        "Take the residual states entering block --layer at the last positions of two prompts, --plus and --minus; "
        "add --coefficient times their difference to the residual stream at that block, at every position of the "
        "prompt and of every generated token. Prints the continuation without and with the vector and the words it "
        "promotes and demotes most; writes steer.csv and the bars steer.FORMAT.")
    add_text_argument(parser, "the text to continue", name="prompt")
    add_model_arguments(parser)
    parser.add_argument("--plus", required=True, metavar="TEXT", help="what to steer toward, e.g. ' Love'")
    parser.add_argument("--minus", required=True, metavar="TEXT", help="what to steer away from, e.g. ' Hate'")
    parser.add_argument("--layer", type=index, default=None, metavar="L",
                        help="block whose input the vector is added to (default: the middle one, L // 2)")
    parser.add_argument("--coefficient", type=real_number, default=4.0, help="c, the vector's multiple (default: 4)")
    parser.add_argument("--max-new-tokens", type=whole_number, default=20, help="tokens generated (default: 20)")
    parser.add_argument("--temperature", type=non_negative, default=0.0, help="0 = greedy (default: 0)")
    parser.add_argument("--seed", type=seed, default=0, help="the sampling seed, the same for both runs (default: 0)")
    parser.add_argument("--top-k", type=positive_int, default=10,
                        help="words shown raised and lowered most at the first new token (default: 10)")
    add_experiment_outputs(parser, "steer")
    return parser


def run(args: argparse.Namespace) -> int:
    """Generate both ways, print the table, write the CSV and the bars."""
    from ..analysis.steering import steering_table, text_steering
    from ..text.generation import Sampling

    sampling = Sampling(args.temperature, seed=args.seed)  # checked before the model loads
    require_matplotlib(args)
    out = output_folder(args.out)
    model, tokenizer = load_model_and_tokenizer(args)
    result = text_steering(model, tokenizer, args.prompt, args.plus, args.minus, layer=args.layer,
                           coefficient=args.coefficient, max_new_tokens=args.max_new_tokens, sampling=sampling,
                           top_k=args.top_k)
    return write_experiment(args, out, "steer", steering_table(result), None, "steering_figure", result)
