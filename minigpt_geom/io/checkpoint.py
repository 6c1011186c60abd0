"""Reading GPT-2 checkpoints: safetensors files in the official or the `transformers` layout.

The `safetensors` library reads the file and enforces its format (a JSON header of known dtypes and shapes
whose byte ranges tile the data exactly); nothing is unpickled. Before any model is built, the tensor names
and shapes are compared with those of a GPT-2 of the shape they imply (`expected_shapes`), so a small
hostile file cannot ask for a huge model. The two layouts differ only in names:
  official      wte.weight, h.0.attn.c_attn.weight, h.0.attn.bias (a causal-mask buffer), ln_f.bias
  transformers  transformer.wte.weight, …, maybe lm_head.weight (the tied embedding again)
Linear weights are [in, out] in both, which is the layout our `Affine` keeps: nothing is transposed.

What is read comes back as tensors and a `GPT2Config` (`read_checkpoint`, then `fill_tensors` into the tensors
the caller built); the model class and its norm registry are model/pretrained.py's, which builds the model.
"""

from __future__ import annotations

import json
import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Union

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from ..config import LIMITS, GPT2Config, check_count, check_epsilon, check_probability
from ..errors import CheckpointError, WeightsNotFoundError
from .files import open_regular, parse_json, read_bytes
from .hub import resolve_file

FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")  # safetensors' names of the dtypes a parameter may be stored in
MASK_BUFFER = re.compile(r"h\.[0-9]+\.attn\.(bias|masked_bias)")  # causal masks, not parameters: never read
LAYER_INDEX = re.compile(r"h\.(0|[1-9][0-9]*)\.")  # a block's tensor; `h.07.` is no index, just an unexpected name
HEADER_BYTES = 4 * 2**20  # a 1000-layer GPT-2's header is under 2 MiB; the format allows 100 MiB (see open_safetensors)
PIECE_BYTES = 16 * 2**20  # tensors are copied in row ranges of about this size (see TensorReader)
CONFIG_JSON_BYTES = 2**20  # GPT-2's config.json is under 1 KB
NORM_KEY = "minigpt_geom_norm"  # config.json's record of a norm variant other than GPT-2's (train.py writes it)
# A checkpoint transformers' GPT-2 cannot compute (another norm variant, or a folded unembedding with its bias)
# names its own model type, so that nothing mistakes it for GPT-2: AutoModel refuses a model_type it does not
# know, and GPT2LMHeadModel.from_pretrained warns that it is "a model of type minigpt_geom". Older files of ours
# said "gpt2" with the variant under NORM_KEY alone; both load here.
MODEL_TYPE, ARCHITECTURE = "minigpt_geom", "MiniGPTGeomGPT2"
# Every field of transformers' GPT2Config is read here, or refused unless it has a value this GPT-2 computes the
# same way, or changes nothing an eval-mode forward pass computes (initializer_range, use_cache, the token ids,
# the summary_* head of GPT2DoubleHeadsModel). The three dropouts become GPT2Config.dropout (DROPOUTS). IMPLEMENTED: field -> the values this GPT-2 implements.
IMPLEMENTED = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"),  # GPT-2's tanh GELU, both spellings
               "scale_attn_weights": (True,),  # scores q·k/√d_head
               "scale_attn_by_inverse_layer_idx": (False,), "reorder_and_upcast_attn": (False,),
               "add_cross_attention": (False,),
               "tie_word_embeddings": (True, False),  # logits = x Eᵀ (E = wte), or an untied lm_head (is_untied)
               "model_type": ("gpt2", MODEL_TYPE)}
DROPOUTS = ("embd_pdrop", "attn_pdrop", "resid_pdrop")  # transformers' names; our one p is written under each
SIZES_IN_CONFIG_JSON = {"n_layer": "n_layer", "n_embd": "n_embd", "n_positions": "n_ctx", "n_ctx": "n_ctx",
                        "vocab_size": "vocab_size"}  # config.json key -> GPT2Config field, checked against shapes
NormNames = Union[str, dict[str, str]]  # config.json's NORM_KEY: a variant name, or site -> name


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors file: its name there, its dtype (safetensors' spelling) and its shape."""

    key: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ConfigFile:
    """A parsed config.json and where it was read."""

    path: Path
    values: dict[str, Any]


def expected_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Every parameter a GPT-2 of this shape holds, named as in the official checkpoint, with its shape."""
    d = config.n_embd
    block = {  # one block: γ, β of both norms; W [in, out] and b of the attention and MLP maps
        "ln_1.weight": (d,), "ln_1.bias": (d,),
        "attn.c_attn.weight": (d, 3 * d), "attn.c_attn.bias": (3 * d,),  # [W_Q | W_K | W_V]
        "attn.c_proj.weight": (d, d), "attn.c_proj.bias": (d,),  # W_O
        "ln_2.weight": (d,), "ln_2.bias": (d,),
        "mlp.c_fc.weight": (d, 4 * d), "mlp.c_fc.bias": (4 * d,),
        "mlp.c_proj.weight": (4 * d, d), "mlp.c_proj.bias": (d,),
    }
    shapes = {"wte.weight": (config.vocab_size, d), "wpe.weight": (config.n_ctx, d)}
    for i in range(config.n_layer):
        shapes.update({f"h.{i}.{name}": shape for name, shape in block.items()})
    shapes.update({"ln_f.weight": (d,), "ln_f.bias": (d,)})
    return shapes


# ---- the file, through the safetensors library ------------------------------------------------------------

@contextmanager
def library_errors(path: Path) -> Iterator[None]:
    """Turn the safetensors library's errors (format violations, I/O) into one-line CheckpointErrors."""
    try:
        yield
    except SafetensorError as error:
        detail = " ".join(str(error).split()).removeprefix("Error while deserializing header: ")
        if "not fully covered" in detail:  # the library's words for data that the tensors do not tile exactly
            raise CheckpointError(
                f"{path} is truncated or has bytes no tensor owns ({detail}): download it again") from None
        raise CheckpointError(f"{path} is not a safetensors file ({detail})") from None
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None


def open_safetensors(path: Path, framework: str = "pt") -> safe_open:
    """The file opened by the safetensors library, which refuses anything its format forbids; `framework` "pt"
    gives torch tensors (torch maps the whole file at once), "numpy" serves the header alone without that."""
    if not path.is_file():  # a directory, a FIFO (would block), a broken link
        raise CheckpointError(f"{path} is not a regular file")
    with library_errors(path):
        with open_regular(path, error=CheckpointError) as f:
            header_bytes = int.from_bytes(f.read(8), "little")  # the format's first 8 bytes: the header's length
        # The library parses a header into some 12x its size in memory (a 75 MiB one took 950 MiB): refuse one
        # far larger than any GPT-2's before it does. Everything else about the file is the library's to check.
        if HEADER_BYTES < header_bytes < path.stat().st_size:  # one past the file's end is the library's to refuse
            raise CheckpointError(f"{path} has a {header_bytes / 2**20:.0f} MiB header; a GPT-2's is under "
                                  f"{HEADER_BYTES // 2**20} MiB")
        return safe_open(str(path), framework=framework)


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Name -> (dtype, shape) of every tensor in the file; nothing but the header is read (and nothing mapped: a
    crafted 32 GiB file is then refused by the size check, not by the kernel's mmap)."""
    with library_errors(path):
        file = open_safetensors(path, framework="numpy")
        return {key: TensorInfo(key, file.get_slice(key).get_dtype(), tuple(file.get_slice(key).get_shape()))
                for key in file.keys()}


def strip_prefix(name: str) -> str:
    """`transformer.h.0.ln_1.weight` -> `h.0.ln_1.weight` (transformers' save_pretrained layout)."""
    return name.removeprefix("transformer.")


def model_entries(path: Path, header: dict[str, TensorInfo], untied: bool = False) -> dict[str, TensorInfo]:
    """Our parameter name -> tensor, for every tensor but the mask buffers and a tied lm_head."""
    entries, seen = {}, set()
    for name, info in header.items():
        ours = strip_prefix(name)
        if ours in seen:
            raise CheckpointError(f"{path}: tensor {ours!r} appears twice (with and without 'transformer.')")
        seen.add(ours)
        if not MASK_BUFFER.fullmatch(ours) and (untied or ours != "lm_head.weight"):
            entries[ours] = info
    return entries


def runs_in_transformers(norm: NormNames | None, tied: bool) -> bool:
    """True when transformers' GPT2LMHeadModel computes this model: layer norm at every site (norm None or
    "layernorm", or a mapping naming it alone) and logits = x Eᵀ, the unembedding tied to the token embedding."""
    names = {norm} if norm is None or isinstance(norm, str) else set(norm.values())
    return names <= {None, "layernorm"} and tied


def is_untied(config_file: ConfigFile | None) -> bool:
    """True when config.json says the unembedding is not the token embedding (a folded or LN-free model saved):
    the file then holds lm_head.weight [vocab, d] and lm_head.bias [vocab] of its own."""
    return config_file is not None and config_file.values.get("tie_word_embeddings", True) is False


def lm_head_entry(header: dict[str, TensorInfo]) -> TensorInfo | None:
    """The unembedding transformers may store again as lm_head.weight (GPT-2 ties it to wte), if present."""
    return next((info for name, info in header.items() if strip_prefix(name) == "lm_head.weight"), None)


# ---- config.json and the model's shape --------------------------------------------------------------------

def read_config_json(path: Path) -> ConfigFile:
    """config.json as a dict: unreadable, oversized, non-UTF-8, non-JSON or non-object files are refused."""
    try:
        raw = read_bytes(path, CONFIG_JSON_BYTES, error=CheckpointError)
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        values = parse_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not UTF-8 text") from None
    except ValueError as error:  # malformed, nested too deeply, or an integer of over 4300 digits
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{path} holds a JSON {type(values).__name__}, expected an object {{key: value}}")
    return ConfigFile(path, values)


def checkpoint_files(source: str | os.PathLike) -> tuple[Path, ConfigFile | None]:
    """Resolve `source` to (model.safetensors path, its config.json parsed, or None)."""
    path = Path(source)
    if path.is_file() or (path.suffix == ".safetensors" and not path.is_dir()):
        if not os.path.lexists(path):
            raise WeightsNotFoundError(f"no such file: {path}")
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path} is not a .safetensors file (pickled .bin checkpoints are never loaded)")
        config_path = path.with_name("config.json")
        config_path = config_path if os.path.lexists(config_path) else None
    else:
        path = resolve_file(source, "model.safetensors")
        config_path = resolve_file(source, "config.json", required=False)
    return path, read_config_json(config_path) if config_path else None


def layer_count(path: Path, entries: dict[str, TensorInfo]) -> int:
    """The blocks the names speak of, largest `h.<i>.` index plus one, refused above LIMITS before any is built."""
    n_layer = 0
    for name in entries:
        if match := LAYER_INDEX.match(name):
            digits = match[1]  # compared as text first: int() of a 5000-digit string raises
            if len(digits) > 6 or int(digits) >= LIMITS["n_layer"]:
                shown = digits if len(digits) <= 12 else digits[:12] + "…"
                raise CheckpointError(f"{path}: tensor {name[:40]!r} is in layer {shown}, beyond the "
                                      f"{LIMITS['n_layer']} layers a GPT2Config allows")
            n_layer = max(n_layer, int(digits) + 1)
    return n_layer


def check_implemented(values: dict[str, Any], n_embd: int) -> None:
    """ValueError naming the first config.json field whose value this GPT-2 does not compute (see IMPLEMENTED)."""
    implemented = {**IMPLEMENTED, "n_inner": (None, 4 * n_embd)}  # the MLP's width: 4d unless stated
    for field, allowed in implemented.items():
        if field in values and not any(type(values[field]) is type(a) and values[field] == a for a in allowed):
            spelled = " or ".join(json.dumps(a) for a in allowed)
            shown = json.dumps(values[field])
            shown = shown if len(shown) <= 40 else shown[:40] + "…"
            raise ValueError(f"{field} = {shown} is not implemented here (only {spelled})")


def json_dropout(values: dict[str, Any]) -> float:
    """The one dropout p of config.json's three (0 where absent; each checked 0 ≤ p < 1). Three different values,
    which no published GPT-2 has, become their largest: in training mode no step drops less than its file asks."""
    stated = [values.get(name, 0.0) for name in DROPOUTS]
    for name, p in zip(DROPOUTS, stated):
        check_probability(name, p)
    return max(stated)


def json_hyperparameters(config_file: ConfigFile | None, n_embd: int) -> tuple[int, float, float]:
    """(n_head, ε, dropout p) from config.json, checked; without it GPT-2's own: 64-wide heads, ε = 1e-5, and
    no dropout."""
    n_head, ln_eps, p = max(n_embd // 64, 1), 1e-5, 0.0
    if config_file is None:
        return n_head, ln_eps, p
    values = config_file.values
    try:
        check_implemented(values, n_embd)
        n_head, ln_eps = values.get("n_head", n_head), values.get("layer_norm_epsilon", ln_eps)
        check_count("n_head", n_head, LIMITS["n_head"])
        if n_embd % n_head:  # heads split the width evenly: d_head = n_embd / n_head
            raise ValueError(f"n_head ({n_head}) does not divide n_embd ({n_embd}, the width of wte.weight)")
        check_epsilon("layer_norm_epsilon", ln_eps)
        p = json_dropout(values)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{config_file.path}: {error}") from None
    return n_head, ln_eps, p


def check_json_sizes(config_file: ConfigFile, config: GPT2Config) -> None:
    """Refuse a config.json whose sizes (n_layer, n_embd, …), where it gives them, differ from the tensors'."""
    for key, field in SIZES_IN_CONFIG_JSON.items():
        stated, actual = config_file.values.get(key, getattr(config, field)), getattr(config, field)
        if type(stated) is not int or stated != actual:
            raise CheckpointError(f"{config_file.path} gives {key} = {stated!r}, but the tensors give {actual}")


def infer_config(path: Path, entries: dict[str, TensorInfo], config_file: ConfigFile | None) -> GPT2Config:
    """Sizes from the tensor shapes; head count and ε from config.json when given, else n_embd/64 and 1e-5."""
    for required in ("wte.weight", "wpe.weight"):
        if required not in entries:
            raise CheckpointError(f"{path} is not a GPT-2 checkpoint: it has no tensor {required!r}")
        if len(entries[required].shape) != 2:
            raise CheckpointError(f"{path}: tensor {required!r} has shape {list(entries[required].shape)}, "
                                  f"expected [rows, n_embd]")
    vocab_size, n_embd = entries["wte.weight"].shape
    n_layer = layer_count(path, entries)
    n_head, ln_eps, p = json_hyperparameters(config_file, n_embd)
    try:
        config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_ctx=entries["wpe.weight"].shape[0],
                            vocab_size=vocab_size, ln_eps=ln_eps, dropout=p)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: its tensors give no valid GPT-2 shape ({error})") from None
    if config_file is not None:
        check_json_sizes(config_file, config)
    return config


def stated_norm(config_file: ConfigFile | None) -> NormNames | None:
    """The norm variant name(s) config.json states under "minigpt_geom_norm" (None: GPT-2's layer norm), checked
    to be a name or {site: name}; whether such variants exist is the model's to say (model/pretrained.py)."""
    stated = config_file.values.get(NORM_KEY) if config_file is not None else None
    valid = stated is None or isinstance(stated, str) or (isinstance(stated, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in stated.items()))
    if not valid:
        raise CheckpointError(f"{config_file.path}: {NORM_KEY} must be a variant name or {{site: name}}, "
                              f"got {stated!r}")
    return stated


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as far as its header and config.json tell, nothing allocated yet: the file, the GPT-2 shape
    its tensors give, each tensor under our name, the unembedding (a tied copy of wte to compare, or untied), and
    the norm variant name(s) config.json states (None: GPT-2's layer norm)."""

    path: Path
    config: GPT2Config
    entries: dict[str, TensorInfo]
    lm_head: TensorInfo | None  # lm_head.weight stored again beside a tied wte: checked equal to it
    untied: bool
    norm: NormNames | None
    config_path: Path | None  # where config.json was read, for errors about what it states


def read_checkpoint(source: str | os.PathLike) -> Checkpoint:
    """Resolve `source` (a preset, hub id, folder or .safetensors file) and read its header and config.json:
    the shape and names are checked, no tensor is read (`check_tensors`, then `fill_tensors`)."""
    path, config_file = checkpoint_files(source)
    header = read_header(path)
    untied = is_untied(config_file)
    entries = model_entries(path, header, untied)
    config = infer_config(path, entries, config_file)
    return Checkpoint(path, config, entries, None if untied else lm_head_entry(header), untied,
                      stated_norm(config_file), config_file.path if config_file is not None else None)


def check_tensors(checkpoint: Checkpoint, scalars: Iterable[str] = ()) -> None:
    """Refuse the file unless its names, shapes and dtypes are those of a GPT-2 of its config (nothing is built).

    `scalars` names the norm variants' learned scalars (`h.0.ln_1.alpha`, 0-d) the file may hold: a checkpoint
    trained with layer norm has none, and they start at the variant's initial values. An untied unembedding's
    bias may be absent too (transformers writes none: it starts at 0)."""
    path, entries, lm_head, config = checkpoint.path, checkpoint.entries, checkpoint.lm_head, checkpoint.config
    untied = checkpoint.untied
    optional = {name: () for name in scalars} | ({"lm_head.bias": (config.vocab_size,)} if untied else {})
    expected = expected_shapes(config) | ({"lm_head.weight": (config.vocab_size, config.n_embd)} if untied else {})
    expected |= {name: shape for name, shape in optional.items() if name in entries}
    missing = [name for name in expected if name not in entries]
    unexpected = [name for name in entries if name not in expected]
    if missing or unexpected:
        parts = [f"missing {len(missing)} tensor(s): {', '.join(missing[:8])}" if missing else "",
                 f"unexpected {len(unexpected)} tensor(s): {', '.join(unexpected[:8])}" if unexpected else ""]
        raise CheckpointError(f"{path} does not fit GPT-2 ({config}): " + "; ".join(p for p in parts if p))
    tensors = [(name, entries[name], shape) for name, shape in expected.items()]
    if lm_head is not None:
        tensors.append(("lm_head.weight", lm_head, expected["wte.weight"]))
    for name, info, shape in tensors:
        if info.shape != shape:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {list(info.shape)}, expected {list(shape)}")
        if info.dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {info.dtype}, expected one of {FLOAT_DTYPES}")


# ---- copying tensors into the model -----------------------------------------------------------------------

class TensorReader:
    """Rows of the file's tensors, through safe_open reopened after every PIECE_BYTES bytes read.

    safe_open maps the whole file, and every page read stays resident while the mapping lives: one mapping
    for the whole load would hold the file (1x its size) beside the model (1x). Reopening drops the pages
    already copied, so the peak stays near the model's own size."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: safe_open | None = None
        self.bytes_read = 0

    def rows(self, key: str, rows: slice) -> Tensor:
        """Rows `rows` of tensor `key`, in the file's dtype (a copy, not a view of the mapping)."""
        if self.file is None or self.bytes_read >= PIECE_BYTES:
            self.file = open_safetensors(self.path)  # the previous mapping is released with its handle
            self.bytes_read = 0
        with library_errors(self.path):
            piece = self.file.get_slice(key)[rows]
        self.bytes_read += piece.nbytes
        return piece


def row_ranges(target: Tensor) -> Iterator[slice]:
    """Consecutive row ranges of `target` of about PIECE_BYTES each (one range for a small tensor)."""
    if target.dim() == 0:  # a variant's learned scalar (h.0.ln_1.alpha): the whole of it, `[...]`
        return iter([Ellipsis])
    row_bytes = math.prod(target.shape[1:]) * target.element_size()
    step = max(1, PIECE_BYTES // max(row_bytes, 1))
    return (slice(start, min(start + step, len(target))) for start in range(0, len(target), step))


def all_finite(x: Tensor) -> bool:
    """True when x holds no NaN or ±inf. Its sum is finite exactly then, unless it overflows (rare: the full
    check settles it), and a sum is about 5x faster than isfinite, which writes a mask as large as x."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def copy_tensor(reader: TensorReader, info: TensorInfo, target: Tensor, name: str) -> None:
    """Fill `target` with the file's tensor piece by piece; refuse NaN/inf in the file or made by the cast."""
    for rows in row_ranges(target):
        piece = reader.rows(info.key, rows)
        if not all_finite(piece):
            raise CheckpointError(f"{reader.path}: tensor {name!r} contains NaN or infinite values")
        target[rows].copy_(piece)
        if target.dtype != piece.dtype and not all_finite(target[rows]):
            dtype = str(target.dtype).removeprefix("torch.")
            raise CheckpointError(
                f"{reader.path}: tensor {name!r} holds finite values up to {piece.abs().max().item():.4g}, "
                f"beyond {dtype}'s largest ({torch.finfo(target.dtype).max:.6g}): the cast to {dtype} overflows "
                f"(the file is fine); load it in float32 or bfloat16"
            )


def check_tied(reader: TensorReader, lm_head: TensorInfo, wte: Tensor) -> None:
    """transformers may store the tied unembedding again as lm_head.weight: it must equal wte."""
    for rows in row_ranges(wte):
        if not torch.equal(reader.rows(lm_head.key, rows).to(wte.dtype), wte[rows]):
            raise CheckpointError(f"{reader.path}: lm_head.weight differs from wte.weight; GPT-2 ties them")


@torch.no_grad()
def fill_tensors(checkpoint: Checkpoint, targets: Mapping[str, Tensor]) -> None:
    """Copy each checked tensor into the target of the same name (a model's parameters, built to the checkpoint's
    config), casting to its dtype; targets the file lacks are left as they are."""
    entries = checkpoint.entries
    absent = [name for name in entries if name not in targets or targets[name].shape != entries[name].shape]
    if absent:  # expected_shapes and the caller disagree: a bug here, not a bad file
        raise RuntimeError(f"no target of the checkpoint's shape for the checked tensors {absent[:8]}")
    reader = TensorReader(checkpoint.path)
    for name, info in entries.items():
        copy_tensor(reader, info, targets[name], name)
    if checkpoint.lm_head is not None:
        check_tied(reader, checkpoint.lm_head, targets["wte.weight"])
