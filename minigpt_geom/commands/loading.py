"""What a command loads, from its arguments: the device checked before anything is built, the model and its
tokenizer (text/pretrained.py's one loader), the line that says where the weights came from, and this
process's place among torchrun's. torch is imported inside the functions, so that `--help` never loads it.
"""

from __future__ import annotations

import argparse
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from ..errors import InputError

if TYPE_CHECKING:
    import torch
    from tqdm import tqdm

    from ..analysis.lens import LensResult
    from ..model.trace import Trace

    from ..model.gpt2 import GPT2
    from ..text.tokenizer import Tokenizer
    from ..training.distributed import Processes


def usable_device(name: str) -> torch.device:
    """torch.device(name) if this machine can allocate on it, else InputError; `auto` is the first of cuda,
    mps and cpu that this machine has."""
    import torch

    if name == "auto":
        return auto_device()
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:  # a bad name; CUDA not compiled in, no driver, no such GPU
        reason = (str(error).strip() or type(error).__name__).splitlines()[0].split(". ")[0]  # its first sentence
        raise InputError(f"--device {name!r} cannot be used here ({reason}); try --device cpu") from None
    if device.type == "meta":
        raise InputError("--device 'meta' holds no numbers; try --device cpu")
    return device


def auto_device() -> torch.device:
    """cuda when a GPU is usable, else Apple's mps, else the cpu: what `--device auto` means."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextmanager
def processes_for(args: argparse.Namespace, advice: Callable[[], str] = lambda: "run the command again"
                  ) -> Iterator[Processes]:
    """This process's place among torchrun's (alone without torchrun) on the checked --device; at the end it
    leaves the process group, whatever happened.

    Under torchrun the ranks first compare every option of the command (one InputError naming the option and
    each rank's value); a rank lost on the way ends the others with one line naming it, followed by `advice()`
    (what to do: run the command again, or continue from a checkpoint)."""
    import torch.distributed as dist

    from ..training.distributed import ProcessGroupError, agree, lost_peer_named, start_processes

    processes = start_processes(usable_device(args.device))
    try:
        with lost_peer_named(processes):
            agree(command_options(args), processes)
            yield processes
    except ProcessGroupError as error:
        raise ProcessGroupError(f"{error}; {advice()}") from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def command_options(args: argparse.Namespace) -> dict[str, object]:
    """{option as typed (`--max-windows`, or a positional's name): its value} for every argument of the command."""
    return {(action.option_strings[-1] if action.option_strings else action.dest): getattr(args, action.dest)
            for action in args.parser._actions if hasattr(args, action.dest)}


def weights_folder(source: str | os.PathLike) -> Path:
    """The folder the weights of `source` (a preset, hub id, folder or file) are read from, resolved."""
    from ..io.checkpoint import checkpoint_files

    return checkpoint_files(source)[0].parent.resolve()


def source_line(source: str | os.PathLike) -> str:
    """`weights: SOURCE from FOLDER`, the line every loading command prints: where the files really came from
    (a preset's drop-in folder, the hub cache, …)."""
    return f"weights: {source} from {weights_folder(source)}"


def load_model(args: argparse.Namespace) -> GPT2:
    """The GPT2 of --weights, on --device in --dtype (the device checked first)."""
    import torch

    from ..model.gpt2 import GPT2

    return GPT2.from_pretrained(args.weights, device=usable_device(args.device), dtype=getattr(torch, args.dtype))


def load_model_and_tokenizer(args: argparse.Namespace, announce: bool = True) -> tuple[GPT2, Tokenizer]:
    """(GPT2, Tokenizer) from --weights and --tokenizer, on --device in --dtype (the device checked first);
    with `announce`, prints where the weights came from (the first line of the command's output)."""
    import torch

    from ..text.pretrained import load_model_and_tokenizer as load

    device = usable_device(args.device)
    loaded = load(args.weights, args.tokenizer, device=device, dtype=getattr(torch, args.dtype))
    if announce:
        print(source_line(args.weights))
    return loaded


def allowed_words(args: argparse.Namespace, tokenizer: Tokenizer, model: GPT2) -> torch.Tensor | None:
    """The mask [V] of --vocab-from's words seen --min-count times, on the model's device; None without it."""
    if not args.vocab_from:
        return None
    from ..analysis.vocabulary import allowed_words as mask, word_counts

    counts = word_counts(args.vocab_from, tokenizer, model.config.vocab_size)
    return mask(counts, args.min_count, device=model.wte.weight.device)


def load_with_vocabulary(args: argparse.Namespace) -> tuple[GPT2, Tokenizer, torch.Tensor | None]:
    """The model and tokenizer (load_model_and_tokenizer), and the mask [V] of the words --vocab-from allows
    (None without it): what every command that ranks the vocabulary starts with."""
    model, tokenizer = load_model_and_tokenizer(args)
    return model, tokenizer, allowed_words(args, tokenizer, model)


def lens_of_text(args: argparse.Namespace, bar: tqdm) -> tuple[GPT2, Tokenizer, list[str], Trace, LensResult]:
    """The model and tokenizer, then the text's tokens, its trace and its logit lens (--top-k words a layer):
    what `lens` and `trajectory` start from; `bar` advances after each step."""
    from ..analysis.lens import text_lens

    model, tokenizer = load_model_and_tokenizer(args)
    bar.update()
    words, trace, lens = text_lens(model, tokenizer, args.text, args.top_k)
    bar.update()
    return model, tokenizer, words, trace, lens
