"""`minigpt-geom generate "prompt"`: continue a prompt, printing the text as each token is chosen."""

from __future__ import annotations

import argparse
import sys

from ..errors import CheckpointError, InputError
from . import add_model_arguments, load_model_and_tokenizer


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `generate` subcommand."""
    parser = subparsers.add_parser("generate", help="continue a prompt, streaming the text")
    parser.add_argument("prompt", nargs="?", default="", help="text to continue (empty: start after <|endoftext|>)")
    add_model_arguments(parser)
    parser.add_argument("--max-new-tokens", type=int, default=50, help="at most this many tokens (default: 50)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default: 1)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, help="sample among the smallest set with mass ≥ p")
    parser.add_argument("--seed", type=int, default=None, help="for reproducible samples (default: random)")
    parser.add_argument("--no-cache", action="store_true", help="recompute every position at every step (slow)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the prompt, then each new piece of text as soon as it is complete; stop at <|endoftext|>."""
    import torch

    from ..generate import Sampling, generate_stream, stream_text

    model, tokenizer = load_model_and_tokenizer(args)
    model = model.to(args.device)
    try:
        eos_id = tokenizer.eot_token
    except CheckpointError:  # a vocabulary without <|endoftext|>: run to max_new_tokens
        eos_id = None
    if args.prompt:
        prompt_ids = tokenizer.encode(args.prompt, allowed_special="all")
    elif eos_id is not None:
        prompt_ids = [eos_id]  # GPT-2's unconditional samples start after a document boundary
    else:
        raise InputError("an empty prompt starts after <|endoftext|>, which this vocabulary lacks: give a prompt")
    idx = torch.tensor([prompt_ids], device=args.device)  # [1, T]
    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)
    tokens = generate_stream(model, idx, args.max_new_tokens, sampling, eos_id=eos_id, use_cache=not args.no_cache)
    new_ids = (i for i in (int(token[0]) for token in tokens) if i != eos_id)  # the stream ends after eos
    print(args.prompt, end="", flush=True)
    for text in stream_text(tokenizer, new_ids):
        sys.stdout.write(text)
        sys.stdout.flush()
    print()
    return 0
