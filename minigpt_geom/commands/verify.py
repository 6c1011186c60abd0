"""`minigpt-geom verify [SOURCE]`: this model's logits against Hugging Face `transformers` on the same weights."""

from __future__ import annotations

import argparse

import torch

from ..errors import MiniGPTGeomError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `verify` subcommand."""
    parser = subparsers.add_parser("verify", help="compare logits with transformers.GPT2LMHeadModel")
    parser.add_argument("source", nargs="?", default="gpt2", help="preset, hub id, directory or .safetensors file")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128, help="tokens per sequence (capped at the context)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest |Δlogit| accepted")
    return parser


def reference_model(source: str) -> "torch.nn.Module":
    """The same checkpoint loaded by transformers (eager attention), from the folder our loader resolved."""
    try:
        from transformers import GPT2Config as HFConfig, GPT2LMHeadModel
    except ImportError:
        raise MiniGPTGeomError("verify needs transformers: pip install 'minigpt-geom[hf]'") from None
    from ..checkpoint import checkpoint_files, infer_config, model_entries, read_header, read_into

    path, config_json = checkpoint_files(source)
    entries = model_entries(path, read_header(path))
    config = infer_config(path, entries, config_json)
    state = {}
    with path.open("rb") as f:  # the same bytes, read independently of our model
        for name, entry in entries.items():
            state[f"transformer.{name}"] = torch.empty(entry.shape, dtype=torch.float32)
            read_into(f, entry, state[f"transformer.{name}"])
    hf_config = HFConfig(n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd,
                         n_positions=config.n_ctx, vocab_size=config.vocab_size, layer_norm_epsilon=config.ln_eps)
    hf_config._attn_implementation = "eager"
    model = GPT2LMHeadModel(hf_config).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:  # lm_head is tied to wte, so it may be absent
        raise MiniGPTGeomError(f"transformers could not take these weights: missing {missing}, unexpected {unexpected}")
    return model


@torch.inference_mode()
def run(args: argparse.Namespace) -> int:
    """Print max and mean |Δlogits| and top-1 agreement; non-zero exit above tolerance."""
    from ..model import GPT2

    model = GPT2.from_pretrained(args.source)
    reference = reference_model(args.source)
    length = min(args.length, model.config.n_ctx)
    idx = torch.randint(0, model.config.vocab_size, (args.batch, length), generator=torch.Generator().manual_seed(args.seed))
    ours, theirs = model(idx), reference(idx).logits
    delta = (ours - theirs).abs()
    agreement = (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item()
    print(f"source: {args.source}  shape: {model.config}")
    print(f"batch {args.batch} x {length} random tokens (seed {args.seed})")
    print(f"max |Δlogits|  = {delta.max().item():.3e}")
    print(f"mean |Δlogits| = {delta.mean().item():.3e}")
    print(f"top-1 agreement = {agreement:.4%}")
    ok = delta.max().item() <= args.tolerance
    print("OK: matches transformers" if ok else f"FAIL: max |Δlogits| above tolerance {args.tolerance:g}")
    return 0 if ok else 1
