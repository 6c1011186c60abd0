"""`minigpt-geom generate "prompt"`: continue a prompt, printing the text as each token is chosen; or continue
every line of a file of prompts (`--prompts FILE`), printing each prompt's text in turn."""

from __future__ import annotations

import argparse
import sys

from .arguments import (add_command, add_model_arguments, add_text_argument, index, non_negative, positive_int,
                        probability, seed, utf8_text)
from .loading import load_model_and_tokenizer, source_line

SUMMARY = "continue a prompt (or a file of prompts), streaming the text"
MAX_PROMPTS_BYTES = 2**24  # a file of prompts is read whole: 16 MiB is thousands of pages of prompts


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `generate` subcommand."""
    parser = add_command(subparsers, "generate", SUMMARY,
                         "Continue a prompt with a KV cache, printing each piece of text as soon as it is complete; "
                         "stop at <|endoftext|>, at a --stop string or after --max-new-tokens. Past the model's "
                         "context the window slides: the model reads the last n_ctx tokens, re-encoded from "
                         "position 0 (--window-step). With --prompts FILE every line is a prompt, run in batches "
                         "of prompts of one length, and each prompt's text is printed under a line "
                         "'==> prompt N <=='. The text streams, so there is no progress bar.")
    add_text_argument(parser, "text to continue (empty: start after <|endoftext|>)", default="", name="prompt")
    add_model_arguments(parser)
    parser.add_argument("--prompts", metavar="FILE",
                        help="continue every non-blank line of FILE ('-': standard input) instead of one prompt")
    parser.add_argument("--max-new-tokens", type=index, default=50,
                        help="at most this many tokens; past the context the window slides (default: 50)")
    parser.add_argument("--stop", nargs="+", default=[], metavar="TEXT", type=utf8_text,
                        help="end a continuation before the first of these strings (not printed), e.g. --stop "
                             "'\\n\\n' written with the shell's $'\\n\\n'")
    parser.add_argument("--window-step", type=positive_int, default=1, metavar="S",
                        help="past the context, re-encode the window once every S tokens (1: every token reads the "
                             "full context, as nanoGPT does; larger is faster; default: 1)")
    parser.add_argument("--temperature", type=non_negative, default=1.0, help="0 = greedy (default: 1)")
    parser.add_argument("--top-k", type=positive_int, default=None, help="sample among the k most likely tokens")
    parser.add_argument("--top-p", type=probability, default=None, help="sample among the smallest set with mass ≥ p")
    parser.add_argument("--seed", type=seed, default=None, help="for reproducible samples (default: random)")
    parser.add_argument("--no-cache", action="store_true", help="recompute every position at every step (slow)")
    return parser


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompts to continue: the one on the command line, or every non-blank line of --prompts."""
    from ..errors import InputError
    from ..io.files import read_text

    if args.prompts is None:
        return [args.prompt]
    if args.prompt:
        raise InputError("give one prompt or --prompts FILE, not both")
    try:
        if args.prompts == "-":  # standard input, bounded as a file is: `< /dev/zero` must not fill the memory
            data = sys.stdin.buffer.read(MAX_PROMPTS_BYTES + 1)
            if len(data) > MAX_PROMPTS_BYTES:
                raise InputError(f"--prompts - gives more than {MAX_PROMPTS_BYTES:,} bytes, the most read")
            text = data.decode("utf-8")
        else:
            text = read_text(args.prompts, MAX_PROMPTS_BYTES)
    except UnicodeDecodeError:
        raise InputError(f"--prompts {args.prompts} is not UTF-8 text") from None
    prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise InputError(f"--prompts {args.prompts} holds no prompt (one a line)")
    return prompts


def run(args: argparse.Namespace) -> int:
    """Print the prompt, then each new piece of text as soon as it is complete (several prompts: each in turn)."""
    from ..text.generation import Sampling, check_stop_strings, stream_completions

    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)  # checked before the model loads
    check_stop_strings(args.stop)
    prompts = read_prompts(args)
    model, tokenizer = load_model_and_tokenizer(args, announce=False)  # stdout is the text alone
    pieces = stream_completions(model, tokenizer, prompts, args.max_new_tokens, sampling, stop=args.stop,
                                use_cache=not args.no_cache, window_step=args.window_step)
    if args.prompts is None:  # one prompt: its text as it comes
        print(args.prompt, end="", flush=True)
        for _, text in pieces:
            sys.stdout.write(text)
            sys.stdout.flush()
        print()
    else:  # the batches interleave prompts: each prompt's text once it is whole, in the file's order
        texts = [""] * len(prompts)
        for number, text in pieces:
            texts[number] += text
        for number, (prompt, text) in enumerate(zip(prompts, texts), start=1):
            print(f"==> prompt {number} <==\n{prompt}{text}")
    if not args.quiet:
        print(f"minigpt-geom generate: {source_line(args.weights)}", file=sys.stderr)
    return 0
