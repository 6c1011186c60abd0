"""`minigpt-geom init -o DIR`: a freshly initialised GPT-2 checkpoint (with its tokenizer), to try every command on:
train's new model (4 layers, d = 64) unless --init PRESET or a size says otherwise."""

from __future__ import annotations

import argparse
from dataclasses import replace

from ..errors import InputError
from ..io.files import parse_json
from .arguments import add_command, folder_path, path_text, positive_int, positive_number, seed
from .outputs import output_folder

SUMMARY = "write a freshly initialised checkpoint"
# A new model's shape unless --init or a size says otherwise, for `init` and `train` alike: small enough to train
# on a laptop's CPU (3.4 M parameters with GPT-2's tokenizer, most of them the embedding); --init gpt2 for 124M.
DEFAULT_SHAPE = dict(n_layer=4, n_head=4, n_embd=64, n_ctx=64)


def norm_argument(text: str) -> str | dict[str, str]:
    """argparse type for --norm: a variant name, or a JSON mapping site -> name such as '{"ln_f": "none"}'."""
    from ..model.variants import get_norm

    try:
        spec = parse_json(text) if text.lstrip().startswith("{") else text
    except ValueError as error:  # malformed, or nested too deeply
        raise argparse.ArgumentTypeError(f"not a JSON mapping: {error}") from None
    names = spec.values() if isinstance(spec, dict) else [spec]
    for name in names:
        try:
            get_norm(name)
        except InputError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return spec


def add_architecture_arguments(parser: argparse.ArgumentParser, fine_tune: bool = False) -> None:
    """--init PRESET, --n-layer/--n-head/--n-embd/--n-ctx (each overriding the preset), --norm, --seed; with
    `fine_tune`, the help texts also say what they mean for a run that starts from --weights."""
    from ..config import PRESETS

    group = parser.add_argument_group("shape (of a new model) and norm" if fine_tune else "shape and norm")
    shape = DEFAULT_SHAPE
    group.add_argument("--init", choices=sorted(PRESETS), metavar="PRESET",
                       help=f"the shape of a published GPT-2: {', '.join(PRESETS)} (default: {shape['n_layer']} "
                            f"layers, {shape['n_head']} heads, d = {shape['n_embd']}, context {shape['n_ctx']})")
    for name, meaning in (("n-layer", "number of blocks"), ("n-head", "heads per block"),
                          ("n-embd", "width d of the residual stream"), ("n-ctx", "context length in tokens")):
        group.add_argument(f"--{name}", type=positive_int, metavar="N",
                           help=f"{meaning}, instead of the preset's or the default's")
    group.add_argument("--norm", type=norm_argument, default=None, metavar="VARIANT",
                       help='norm variant of every site (layernorm, rmsnorm, sphere, dyt, none …) or a JSON '
                            'mapping such as \'{"ln_f": "none"}\' (default: layernorm'
                            + ("; fine-tuning: the weights\' own)" if fine_tune else ")"))
    group.add_argument("--dyt-alpha", type=positive_number, default=None, metavar="A",
                       help="DyT's starting α at every dyt site, tanh(α x): a smaller α saturates later (default: "
                            "0.5, the DyT paper's)" + ("; with --weights, for the sites --norm makes dyt" if fine_tune
                                                       else ""))
    group.add_argument("--dyt-gamma", type=positive_number, default=None, metavar="G",
                       help="DyT's starting γ at ln_f, the site the tied unembedding reads (default: 1, the DyT "
                            "paper's). At γ = 1 a DyT point's norm, about α‖x‖, is far below layer norm's √d, so "
                            "training grows x until ln_f's tanh saturates and stops the gradient; a larger γ (e.g. "
                            "32) gives the logits their scale instead (docs/norms.md)")
    group.add_argument("--seed", type=seed, default=None,
                       help=f"seed of the initialisation{' and batches' if fine_tune else ''} (default: 0)")


def set_dyt_start(model, alpha: float | None, gamma: float | None) -> None:
    """Start every DyT site of `model` at α = `alpha`, and ln_f's γ at `gamma` (None: leave it as it is);
    InputError when the model has no DyT site there."""
    import torch

    sites = [site for site in model.norm_sites().values() if site.variant.name == "dyt"]
    if alpha is not None and not sites:
        raise InputError("--dyt-alpha sets DyT's starting α: give --norm dyt (or a mapping with dyt sites) too")
    if gamma is not None and model.ln_f.variant.name != "dyt":
        raise InputError(f"--dyt-gamma sets the starting γ of ln_f's DyT, and ln_f is {model.ln_f.variant.name}: "
                         "give --norm dyt (or a mapping with ln_f dyt) too")
    with torch.no_grad():
        for site in sites if alpha is not None else ():
            site.alpha.fill_(alpha)
        if gamma is not None:
            model.ln_f.weight.fill_(gamma)  # y = γ ⊙ tanh(αx) + β: the logits ⟨y, e_v⟩ scale with γ


def wants_new_model(args: argparse.Namespace) -> bool:
    """True when --init or a size was given."""
    return any(getattr(args, name) is not None for name in ("init", "n_layer", "n_head", "n_embd", "n_ctx"))


def new_model_from_arguments(args: argparse.Namespace, vocab_size: int):
    """A freshly initialised GPT2 of the requested shape, its vocabulary the tokenizer's."""
    import torch

    from ..config import PRESETS, GPT2Config
    from ..memory import check_fits, model_bytes
    from ..model.gpt2 import GPT2

    base = PRESETS[args.init] if args.init else replace(GPT2Config(), **DEFAULT_SHAPE)
    sizes = {name: getattr(args, name) for name in ("n_layer", "n_head", "n_embd", "n_ctx")
             if getattr(args, name) is not None}
    try:
        config = replace(base, vocab_size=vocab_size, **sizes)
    except ValueError as error:
        raise InputError(str(error)) from None
    check_fits(f"a model of {config}", 2 * model_bytes(config), torch.device("cpu"))  # built, then copied to save
    model = GPT2(config, norm=args.norm or "layernorm", seed=args.seed or 0)
    set_dyt_start(model, args.dyt_alpha, args.dyt_gamma)
    return model


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `init` subcommand."""
    parser = add_command(subparsers, "init", SUMMARY, __doc__.split(":", 1)[1].strip())
    parser.add_argument("-o", "--out", required=True, type=folder_path, metavar="DIR",
                        help="folder to write the checkpoint into")
    parser.add_argument("--overwrite", action="store_true", help="replace the checkpoint -o DIR holds")
    parser.add_argument("--tokenizer", default="gpt2", type=path_text, metavar="SOURCE",
                        help="where vocab.json and merges.txt are; sets the vocabulary size (default: gpt2)")
    add_architecture_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Write model.safetensors, config.json, vocab.json and merges.txt (DEFAULT_SHAPE unless told otherwise)."""
    from ..training.run_folder import check_new_output
    from ..text.tokenizer import ENDOFTEXT, Tokenizer

    check_new_output(output_folder(args.out), overwrite=args.overwrite)
    tokenizer = Tokenizer.from_pretrained(args.tokenizer)
    model = new_model_from_arguments(args, tokenizer.n_vocab)
    folder = model.save_pretrained(args.out, args.tokenizer, tokenizer.special_tokens.get(ENDOFTEXT))
    print(f"wrote {folder / 'model.safetensors'} (a new GPT-2 of {model.config.n_layer} layers, "
          f"d = {model.config.n_embd}, {model.num_parameters():,} parameters; config.json and the tokenizer beside it)")
    return 0
