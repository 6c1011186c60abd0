"""`minigpt-geom generate "prompt"`: continue a prompt, printing the text as each token is chosen."""

from __future__ import annotations

import argparse
import sys

from . import (add_command, add_model_arguments, index, load_model_and_tokenizer, non_negative, positive_int, probability,
               seed, source_line, utf8_text)

SUMMARY = "continue a prompt, streaming the text"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `generate` subcommand."""
    parser = add_command(subparsers, "generate", SUMMARY,
                         "Continue a prompt with a KV cache, printing each piece of text as soon as it is complete; "
                         "stop at <|endoftext|> or after --max-new-tokens. The text streams, so there is no "
                         "progress bar.")
    parser.add_argument("prompt", nargs="?", default="", type=utf8_text, help="text to continue (empty: start after <|endoftext|>)")
    add_model_arguments(parser)
    parser.add_argument("--max-new-tokens", type=index, default=50,
                        help="at most this many tokens; prompt + new tokens must fit the context (default: 50)")
    parser.add_argument("--temperature", type=non_negative, default=1.0, help="0 = greedy (default: 1)")
    parser.add_argument("--top-k", type=positive_int, default=None, help="sample among the k most likely tokens")
    parser.add_argument("--top-p", type=probability, default=None, help="sample among the smallest set with mass ≥ p")
    parser.add_argument("--seed", type=seed, default=None, help="for reproducible samples (default: random)")
    parser.add_argument("--no-cache", action="store_true", help="recompute every position at every step (slow)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the prompt, then each new piece of text as soon as it is complete; stop at <|endoftext|>."""
    import torch

    from ..analysis.text import encode_text
    from ..errors import CheckpointError, InputError
    from ..text.generation import Sampling, generate_stream, stream_text

    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)  # checked before the model loads
    model, tokenizer = load_model_and_tokenizer(args, announce=False)  # stdout is the text alone
    try:
        eos_id = tokenizer.eot_token
    except CheckpointError:  # a vocabulary without <|endoftext|>: run to max_new_tokens
        eos_id = None
    if args.prompt:
        prompt_ids = encode_text(tokenizer, args.prompt, model.config.n_ctx, allowed_special="all")
    elif eos_id is not None:
        prompt_ids = [eos_id]  # GPT-2's unconditional samples start after a document boundary
    else:
        raise InputError("an empty prompt starts after <|endoftext|>, which this vocabulary lacks: give a prompt")
    idx = torch.tensor([prompt_ids], device=model.wte.weight.device)  # [1, T]
    tokens = generate_stream(model, idx, args.max_new_tokens, sampling, eos_id=eos_id, use_cache=not args.no_cache)
    new_ids = (i for i in (int(token[0]) for token in tokens) if i != eos_id)  # the stream ends after eos
    print(args.prompt, end="", flush=True)
    for text in stream_text(tokenizer, new_ids):
        sys.stdout.write(text)
        sys.stdout.flush()
    print()
    if not args.quiet:
        print(f"minigpt-geom generate: {source_line(args.weights)}", file=sys.stderr)
    return 0
