"""`minigpt-geom verify`: this model's logits against Hugging Face `transformers` on the same weights."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .arguments import add_command, add_model_arguments, non_negative, positive_int, seed
from .loading import load_model, source_line
from .outputs import progress_bar

if TYPE_CHECKING:
    import torch
    import transformers

    from ..io.checkpoint import ConfigFile
    from ..model.gpt2 import GPT2

SUMMARY = "compare logits with transformers.GPT2LMHeadModel"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `verify` subcommand."""
    parser = add_command(subparsers, "verify", SUMMARY,
                         "Run random token sequences through this model and through transformers' GPT-2 (float32, "
                         "eager attention) loaded from the same file and its own config.json; print where the files "
                         "came from, max and mean |Δlogits| and top-1 agreement. Exit code 1 when the largest "
                         "difference exceeds --tolerance.")
    add_model_arguments(parser, tokenizer=False)
    parser.add_argument("--batch", type=positive_int, default=4, help="random sequences (default: 4)")
    parser.add_argument("--length", type=positive_int, default=128,
                        help="tokens per sequence, capped at the context (default: 128)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the random tokens (default: 0)")
    parser.add_argument("--tolerance", type=non_negative, default=1e-4,
                        help="largest |Δlogit| accepted (default: 1e-4, for float32; raise it for float16/bfloat16)")
    return parser


def transformers_config(config_file: ConfigFile | None, model: GPT2) -> transformers.GPT2Config:
    """transformers' config from the folder's own config.json, as transformers itself would read it (so a field
    this package ignored would show as a difference); without one, the shape the tensors gave."""
    from transformers import GPT2Config as HFConfig

    config = model.config
    if config_file is not None:
        hf_config = HFConfig.from_dict(config_file.values)
    else:
        hf_config = HFConfig(n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd,
                             n_positions=config.n_ctx, vocab_size=config.vocab_size, layer_norm_epsilon=config.ln_eps)
    hf_config.bos_token_id = hf_config.eos_token_id = None
    hf_config._attn_implementation = "eager"
    return hf_config


def check_gpt2(source: str) -> None:
    """InputError, before anything is loaded, when transformers has no GPT-2 that computes the checkpoint (another
    norm variant, or a folded unembedding with a bias): there is nothing to compare it with."""
    from ..errors import InputError
    from ..io.checkpoint import checkpoint_files, is_untied, runs_in_transformers, stated_norm

    _, config_file = checkpoint_files(source)
    norm, tied = stated_norm(config_file), not is_untied(config_file)
    if runs_in_transformers(norm, tied):
        return
    names = sorted({norm} if isinstance(norm, str) else set(norm.values())) if norm is not None else ["layernorm"]
    what = (f"its norm is {' and '.join(names)}" if names != ["layernorm"] else
            "its unembedding is untied, with a bias (a folded model)")
    raise InputError(f"transformers has no GPT-2 that computes {source} ({what}): nothing to verify it against; "
                     f"verify compares GPT-2 checkpoints (layer norm, tied unembedding)")


def reference_model(source: str, model: GPT2, device: torch.device) -> torch.nn.Module:
    """The same file read by the safetensors library into transformers' GPT-2 (eager attention, float32),
    configured by the checkpoint's own config.json."""
    import torch
    from safetensors.torch import load_file

    from ..io.checkpoint import checkpoint_files
    from ..errors import MiniGPTGeomError

    try:
        from transformers import GPT2LMHeadModel
    except ImportError:
        raise MiniGPTGeomError("verify needs transformers: pip install 'minigpt-geom[hf]'") from None
    path, config_file = checkpoint_files(source)
    state = {name if name.startswith(("transformer.", "lm_head.")) else f"transformer.{name}": tensor.float()
             for name, tensor in load_file(str(path)).items() if not name.endswith((".attn.bias", ".attn.masked_bias"))}
    with torch.device("meta"):  # no random initialisation: every weight comes from the file
        reference = GPT2LMHeadModel(transformers_config(config_file, model))
    missing, unexpected = reference.load_state_dict(state, strict=False, assign=True)
    if unexpected or set(missing) - {"lm_head.weight"}:  # lm_head is tied to wte, so it may be absent
        raise MiniGPTGeomError(f"transformers could not take these weights: missing {missing}, unexpected {unexpected}")
    reference.tie_weights()
    return reference.to(device).eval()


def run(args: argparse.Namespace) -> int:
    """Print max and mean |Δlogits| and top-1 agreement; non-zero exit above tolerance."""
    import torch

    from ..memory import check_fits

    check_gpt2(args.weights)
    with progress_bar(args, 4, "verify") as bar, torch.inference_mode():
        model = load_model(args)
        device = model.wte.weight.device
        length = min(args.length, model.config.n_ctx)
        # both models' float32 logits, their difference and its top-1s, beside two copies of the weights
        logits = args.batch * length * model.config.vocab_size * 4
        check_fits(f"--batch {args.batch} --length {length}", 4 * logits + 3 * model.num_parameters() * 4, device)
        bar.update()
        reference = reference_model(args.weights, model, device)
        bar.update()
        idx = torch.randint(0, model.config.vocab_size, (args.batch, length),
                            generator=torch.Generator().manual_seed(args.seed)).to(device)
        ours = model(idx).float()
        bar.update()
        theirs = reference(idx).logits
        bar.update()
    delta = (ours - theirs).abs()
    agreement = (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item()
    print(f"{source_line(args.weights)} ({args.dtype} on {device})")
    print(f"shape: {model.config}")
    print(f"batch {args.batch} x {length} random tokens (seed {args.seed}), against transformers in float32")
    print(f"max |Δlogits|  = {delta.max().item():.3e}")
    print(f"mean |Δlogits| = {delta.mean().item():.3e}")
    print(f"top-1 agreement = {agreement:.4%}")
    ok = delta.max().item() <= args.tolerance
    print("OK: matches transformers" if ok else f"FAIL: max |Δlogits| above tolerance {args.tolerance:g}")
    return 0 if ok else 1
