"""Attacks on the command line, as issue 27 made them: crafted files, kills, a full disk, odd paths, hostile sizes
and torchrun ranks that disagree. Each attack runs the real CLI (`python -m minigpt_geom …`) in a fresh process
and checks the outcome it should have, not only that nothing crashed:

    refused      exit 2, exactly one line on stderr naming the problem, no traceback, and the attack's folder
                 exactly as it was (no partial output, nothing of the user's changed: every entry's type, mode,
                 size and bytes compared)
    succeeds     exit 0, no traceback, and the attack's own check of what it wrote
    kills        SIGKILL, SIGTERM or SIGINT at the Nth call of a function (a rename, a tensor file, a link),
                 then --resume (or the same command again) ends on the uninterrupted run's bytes: every tensor
                 of the weights and the optimiser's state equal, the user's files in the folder untouched
    every child's peak RSS is measured (os.wait4) and bounded.

    python bench/attacks.py                       # every attack, 2 at a time (minutes: bench/NOTES.md)
    python bench/attacks.py --quick               # a sample, each class (about a minute on a quiet machine)
    python bench/attacks.py --only kills --json summary.json --keep   # one class; the folders kept

The script builds what it attacks in a temporary folder: a corpus (three files of Python's standard library),
a tokenizer (`tokenizer`), a model (`init`), token files (`prepare`) and a finished run (`train`). It prints a
table per class (tried, handled, left) and, for each attack left, its name and why. Figures: bench/NOTES.md."""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("crafted", "kills", "disk", "paths", "sizes", "torchrun")
MIB = 2**20
RSS_BOUND = 1536 * MIB  # a child that allocated what a hostile size asked for would be far past this
# ulimit -v of the hostile sizes: the memory probe honours it (the check refuses what does not fit in it), and a
# size it let through cannot take the machine (`--eval-windows 1000000000` fits 22 GiB available: 12 GB peak)
SAFETY = ((resource.RLIMIT_AS, 4 * 2**30),)
DEEP = 100_000  # JSON nesting past the parser's recursion limit
ARGV_DEEP = 10_000  # past it too, in one argument (the kernel takes at most 128 KiB: 100k would not fit)
STDLIB = ("textwrap.py", "string.py", "shlex.py")

# One tiny model everywhere: 1 layer, d = 32, context 32; a run of 6 steps, a checkpoint every 2.
SHAPE = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--n-ctx", "32"]
RUN = ["--steps", "6", "--eval-interval", "2", "--batch-size", "4", "--context", "16", "--warmup", "1",
       "--eval-windows", "2", "--sample-tokens", "0", "--quiet"]
TRAIN = ["train", "<T>", "--tokenizer", "<TOK>", *SHAPE, *RUN]
REMOVE_LN = ["remove-ln", "<T>", "--weights", "<W>", *RUN]
PREPARE = ["prepare", "<C>", "--tokenizer", "<TOK>", "--quiet"]
LENS = ["lens", "the cat sat on the mat", "--no-plot", "--quiet"]
CONTINUE = {"train": ("train", "<T>", "-o", "<D>/run", "--resume", "--quiet"),  # the saved settings
            "remove-ln": (*REMOVE_LN, "-o", "<D>/rl", "--resume")}


# ---- what an attack is --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Expect:
    """The outcome an attack must have: exit code `code`; for 2, one line containing every fragment and the
    attack's folder unchanged; for 0, `check(folder)` returns no problem."""
    code: int
    fragments: tuple[str, ...] = ()
    check: Callable[[Path], str | None] | None = None
    tolerate: tuple[str, ...] = ()  # file names that may appear or change in a refusal (and new empty folders)


def refused(*fragments: str) -> Expect:
    """Exit 2, one line on stderr containing every fragment (case-insensitive), the folder as it was."""
    return Expect(2, fragments)


RECORDS = (".minigpt_geom_manifest.json", "log.csv", "sigma.csv")  # a run folder's records: no model; a rerun reuses it


def refused_keeping_records(*fragments: str) -> Expect:
    """refused(), except that the run folder may be created holding its records alone (RECORDS)."""
    return Expect(2, fragments, tolerate=RECORDS)


def succeeds(check: Callable[[Path], str | None] | None = None) -> Expect:
    """Exit 0 and, if given, check(folder) is None."""
    return Expect(0, (), check)


@dataclass(frozen=True)
class Attack:
    """One attack: `argv` of the CLI (<C>, <TOK>, <W>, <T>, <R> name the fixtures, <D> the attack's own folder,
    its working directory), `setup(folder, fixtures)` run first, the outcome `expect`; `how` runs it (a plain
    command, a kill then a resume, or ranks of a process group)."""
    name: str
    kind: str
    argv: tuple[str, ...]
    expect: Expect = field(default_factory=refused)
    setup: Callable[[Path, dict], None] | None = None
    how: str = "command"
    quick: bool = False
    env: tuple[tuple[str, str], ...] = ()
    limits: tuple[tuple[int, int], ...] = ()  # (resource.RLIMIT_*, bytes) for the child
    stdout: str | None = None  # a file the child's stdout goes to (a device, a full disk)
    kill: tuple[str, str, int, str] | None = None  # (module, function, nth call, signal) for how="kill"
    resume: tuple[str, ...] = ()  # the command that continues a killed one (default: the same command again)
    ranks: tuple[tuple[str, ...], ...] = ()  # how="ranks": extra words of rank 0 and rank 1
    timeout: float = 120


def attack(name: str, kind: str, argv: list[str], expect: Expect | None = None, **options) -> Attack:
    """An Attack from lists (the entries below stay one line each where they can)."""
    return Attack(name, kind, tuple(argv), expect or refused(), **options)


# ---- setups: what an attack's folder holds before the command runs ---------------------------------------------

def model_copy(folder: Path, fixtures: dict) -> Path:
    """folder/m: the fixture model's four files as plain files (no links), to damage."""
    model = folder / "m"
    model.mkdir()
    for name in ("config.json", "vocab.json", "merges.txt", "model.safetensors"):
        shutil.copyfile(fixtures["W"] / name, model / name)
    return model


def safetensors_parts(path: Path) -> tuple[dict, bytes]:
    """(header, data) of a safetensors file: an 8-byte little-endian length, JSON, the raw bytes."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def write_safetensors(path: Path, header: dict | bytes, data: bytes, length: int | None = None) -> None:
    """A safetensors file from a header (a dict or raw bytes) and data, checked by no one; `length` may lie."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head) if length is None else length) + head + data)


def damaged_model(edit: Callable[[Path], None]) -> Callable[[Path, dict], None]:
    """A setup: a copy of the model, then edit(its folder)."""
    return lambda folder, fixtures: edit(model_copy(folder, fixtures))


def header_edit(change: Callable[[dict, bytes], tuple[dict | bytes, bytes] | None], **write) -> Callable:
    """A setup whose model.safetensors has change(header, data) -> (header, data) (None: edited in place)."""
    def edit(model: Path) -> None:
        header, data = safetensors_parts(model / "model.safetensors")
        header, data = change(header, data) or (header, data)
        write_safetensors(model / "model.safetensors", header, data, **write)
    return damaged_model(edit)


def tensor_field(name: str, key: str, value) -> Callable:
    """A header whose tensor `name` says `key` = value (a shape, a dtype, offsets that lie)."""
    return header_edit(lambda header, data: header[name].__setitem__(key, value))


def tensors_edit(change: Callable[[dict], None]) -> Callable:
    """A valid file whose tensors (numpy arrays by name) change(tensors) altered: NaN, missing, extra."""
    def edit(model: Path) -> None:
        from safetensors.numpy import load_file, save_file

        tensors = load_file(model / "model.safetensors")
        change(tensors)
        save_file(tensors, model / "model.safetensors")
    return damaged_model(edit)


def file_text(name: str, text: str | bytes | Callable[[str], str]) -> Callable:
    """A model whose file `name` holds text (or text(old text))."""
    def edit(model: Path) -> None:
        value = text(model.joinpath(name).read_text()) if callable(text) else text
        (model / name).write_bytes(value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape"))
    return damaged_model(edit)


def config_with(**fields) -> Callable:
    """A model whose config.json has these fields."""
    return file_text("config.json", lambda text: json.dumps({**json.loads(text), **fields}))


def vocab_with(extra: str) -> Callable:
    """A model whose vocab.json has one more entry, written raw (`"zz": 9999…`)."""
    return file_text("vocab.json", lambda text: text.rstrip().removesuffix("}") + f", {extra}}}")


def pickle_file(path: Path, marker: Path) -> None:
    """A pickle that creates `marker` when it is unpickled (a payload that must never run)."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    path.write_bytes(pickle.dumps({"wte.weight": Payload()}))


def pickled_model(name: str) -> Callable[[Path, dict], None]:
    """A model folder whose weights are a pickle named `name` (model.safetensors removed)."""
    def setup(folder: Path, fixtures: dict) -> None:
        model = model_copy(folder, fixtures)
        (model / "model.safetensors").unlink()
        pickle_file(model / name, folder.parent / f"{folder.name}.unpickled")  # outside: refused must not make it
    return setup


def copy_of(key: str, to: str, edit: Callable[[Path], None] | None = None) -> Callable[[Path, dict], None]:
    """A setup: a copy of the fixture `key` (links kept) as folder/to, then edit(the copy)."""
    def setup(folder: Path, fixtures: dict) -> None:
        shutil.copytree(fixtures[key], folder / to, symlinks=True)
        if edit is not None:
            edit(folder / to)
    return setup


def text_file(relative: str, text: str | bytes) -> Callable[[Path], None]:
    """An edit writing `text` at relative (inside the copied folder)."""
    data = text if isinstance(text, bytes) else text.encode()
    return lambda folder: (folder / relative).write_bytes(data)


def json_edit(relative: str, **fields) -> Callable[[Path], None]:
    """An edit of a JSON file inside a copied folder (through the run folder's links)."""
    def edit(folder: Path) -> None:
        path = (folder / relative).resolve()
        path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return edit


def both(*setups: Callable[[Path, dict], None]) -> Callable[[Path, dict], None]:
    """Several setups, in order."""
    def setup(folder: Path, fixtures: dict) -> None:
        for each in setups:
            each(folder, fixtures)
    return setup


def made(*entries: tuple[str, str]) -> Callable[[Path, dict], None]:
    """A setup making entries in the attack's folder: ("dir", path), ("file", path), ("fifo", path),
    ("null", path) a character device like /dev/null, ("zero", path) like /dev/zero, ("link", "path->target"),
    ("sparse", "path:bytes")."""
    def setup(folder: Path, fixtures: dict) -> None:
        for kind, spec in entries:
            path = folder / spec.split("->")[0].split(":")[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "dir":
                path.mkdir(exist_ok=True)
            elif kind == "file":
                path.write_text(f"the user's own {path.name}\n")
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind in ("null", "zero"):
                os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3 if kind == "null" else 5))
            elif kind == "link":
                path.symlink_to(spec.split("->")[1])
            elif kind == "sparse":
                with path.open("wb") as f:
                    f.truncate(int(spec.split(":")[1]))
    return setup


def sparse_safetensors(vocab: int, d: int) -> Callable[[Path, dict], None]:
    """A one-layer GPT-2 safetensors file of vocab × d embeddings whose data is sparse: its header alone on disk."""
    def setup(folder: Path, fixtures: dict) -> None:
        model = model_copy(folder, fixtures)
        header, _ = safetensors_parts(model / "model.safetensors")
        offset, fixed = 0, {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            shape = [vocab, d] if name == "wte.weight" else entry["shape"]
            size = 4 * functools.reduce(int.__mul__, shape, 1)
            fixed[name] = {**entry, "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
        path = model / "model.safetensors"
        write_safetensors(path, fixed, b"")
        with path.open("r+b") as f:
            f.truncate(path.stat().st_size + offset)
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "vocab_size": vocab}))
    return setup


# ---- checks of what a successful attack left ---------------------------------------------------------------

def is_kind(relative: str, test: Callable[[int], bool], what: str) -> Callable[[Path], str | None]:
    """A check: folder/relative (not followed) is still what test() says."""
    def check(folder: Path) -> str | None:
        path = folder / relative
        return None if os.path.lexists(path) and test(os.lstat(path).st_mode) else f"{relative} is no longer {what}"
    return check


def holds(relative: str, text: str | None = None) -> Callable[[Path], str | None]:
    """A check: folder/relative exists (and holds `text`)."""
    def check(folder: Path) -> str | None:
        path = folder / relative
        if not path.exists():
            return f"{relative} is missing"
        if text is not None and path.read_text() != text:
            return f"{relative} was changed"
        return None
    return check


def same_modes(relative: str, *names: str) -> Callable[[Path], str | None]:
    """A check: the files `names` in folder/relative have one mode (the weights' as config.json's: the umask's)."""
    def check(folder: Path) -> str | None:
        modes = {name: oct(stat.S_IMODE((folder / relative / name).stat().st_mode)) for name in names}
        return None if len(set(modes.values())) == 1 else f"modes differ: {modes}"
    return check


def last_logged(relative: str, step: str) -> Callable[[Path], str | None]:
    """A check: the last row of the log.csv at relative is of `step`."""
    def check(folder: Path) -> str | None:
        last = (folder / relative).read_text().splitlines()[-1].split(",")[0]
        return None if last == step else f"the log ends at step {last}, not {step}"
    return check


def all_of(*checks: Callable[[Path], str | None]) -> Callable[[Path], str | None]:
    """Every check; the first problem."""
    return lambda folder: next((p for c in checks if (p := c(folder)) is not None), None)


USERS = "the user's own {}\n"  # what made(("file", …)) writes


def users(relative: str) -> Callable[[Path], str | None]:
    """A check: the user's file made by made(("file", relative)) is there, unchanged."""
    return holds(relative, USERS.format(Path(relative).name))


def stderr_says(fragment: str) -> Callable[[Path], str | None]:
    """A check: the child's stderr (saved beside the folder) contains fragment."""
    def check(folder: Path) -> str | None:
        err = folder.with_suffix(".err").read_text(errors="replace")
        return None if fragment.lower() in err.lower() else f"stderr lacks {fragment!r}: {err.strip()[-200:]!r}"
    return check


# ---- the attacks ------------------------------------------------------------------------------------------------

def crafted_attacks() -> list[Attack]:
    """Damaged model files (safetensors, config.json, vocab.json, merges.txt), pickles, token folders and runs."""
    lens = [*LENS, "--weights", "<D>/m"]
    model = [  # (name, setup, fragment of the one line)
        ("safetensors truncated to half", damaged_model(lambda m: m.joinpath("model.safetensors").write_bytes(
            m.joinpath("model.safetensors").read_bytes()[:20000])), "model.safetensors"),
        ("safetensors of 4 bytes", damaged_model(lambda m: m.joinpath("model.safetensors").write_bytes(b"\0" * 4)),
         "model.safetensors"),
        ("safetensors empty", damaged_model(lambda m: m.joinpath("model.safetensors").write_bytes(b"")),
         "model.safetensors"),
        ("header length 2^63", header_edit(lambda h, d: None, length=2**63), "model.safetensors"),
        ("header length past the file", header_edit(lambda h, d: None, length=10**6), "model.safetensors"),
        ("header not JSON", header_edit(lambda h, d: (b"{not json" + b" " * 30, d)), "model.safetensors"),
        ("header nested 100k deep", header_edit(lambda h, d: (b"[" * DEEP + b"]" * DEEP, d)), "model.safetensors"),
        ("header duplicate keys", header_edit(lambda h, d: (json.dumps(h)[:-1].encode() + b', "ln_f.bias": '
                                                            + json.dumps(h["ln_f.weight"]).encode() + b"}", d)),
         "model.safetensors"),
        ("dtype F64 over F32 bytes", tensor_field("ln_f.weight", "dtype", "F64"), "model.safetensors"),
        ("dtype unknown Q4", tensor_field("ln_f.weight", "dtype", "Q4"), "model.safetensors"),
        ("shape larger than its bytes", tensor_field("ln_f.weight", "shape", [33]), "model.safetensors"),
        ("shape negative", tensor_field("ln_f.weight", "shape", [-32]), "model.safetensors"),
        ("shape a string", tensor_field("ln_f.weight", "shape", ["32"]), "model.safetensors"),
        ("shape 2^70", tensor_field("ln_f.weight", "shape", [2**70]), "model.safetensors"),
        ("offsets past the data", tensor_field("ln_f.weight", "data_offsets", [0, 10**9]), "model.safetensors"),
        ("offsets reversed", tensor_field("ln_f.weight", "data_offsets", [128, 0]), "model.safetensors"),
        ("offsets overlapping another tensor", header_edit(lambda h, d: h["ln_f.bias"].__setitem__(
            "data_offsets", h["ln_f.weight"]["data_offsets"])), "model.safetensors"),
        ("oversized: 1 MB of trailing bytes", header_edit(lambda h, d: (h, d + b"\0" * MIB)), "model.safetensors"),
        ("metadata not strings", header_edit(lambda h, d: h.__setitem__("__metadata__", {"format": [1] * 1000})),
         "model.safetensors"),
        ("NaN in the embedding", tensors_edit(lambda t: t["wte.weight"].__setitem__((5, 3), float("nan"))), "NaN"),
        ("inf in ln_f", tensors_edit(lambda t: t["ln_f.weight"].__setitem__(0, float("inf"))), "infinite"),
        ("a tensor missing", tensors_edit(lambda t: t.pop("h.0.attn.c_proj.weight")), "h.0.attn.c_proj.weight"),
        ("a layer of another block", tensors_edit(lambda t: t.update({"h.5.ln_1.weight": t["ln_f.weight"]})),
         "n_layer"),
        ("a layer index bomb", tensors_edit(lambda t: t.update({"h.999999999.ln_1.weight": t["ln_f.weight"]})),
         "h.999999999"),
        ("an unknown tensor", tensors_edit(lambda t: t.update({"foo.bar": t["ln_f.weight"]})), "foo.bar"),
        ("the embedding of another width", tensors_edit(lambda t: t.update({"wte.weight": t["wte.weight"][:, :31]})),
         "wte.weight"),
        ("int64 weights", tensors_edit(lambda t: t.update({"ln_f.weight": t["ln_f.weight"].astype("int64")})),
         "ln_f.weight"),
        ("config epsilon 1e300", config_with(layer_norm_epsilon=1e300), "layer_norm_epsilon"),
        ("config n_layer 10^12", config_with(n_layer=10**12), "n_layer"),
        ("config n_embd 2^62", config_with(n_embd=2**62), "n_embd"),
        ("config n_head 0", config_with(n_head=0), "n_head"),
        ("config n_head not dividing n_embd", config_with(n_head=5), "n_head"),
        ("config n_positions -1", config_with(n_positions=-1, n_ctx=-1), "n_"),
        ("config vocab_size a string", config_with(vocab_size="300"), "vocab_size"),
        ("config n_layer true", config_with(n_layer=True), "n_layer"),
        ("config activation unknown", config_with(activation_function="swish_of_doom"), "activation"),
        ("config unknown norm site", config_with(minigpt_geom_norm={"lnf": "none"}), "lnf"),
        ("config unknown norm variant", config_with(minigpt_geom_norm="wobbly"), "wobbly"),
        ("config nested 100k deep", file_text("config.json", "[" * DEEP + "]" * DEEP), "config.json"),
        ("config a list", file_text("config.json", "[1, 2]"), "config.json"),
        ("config not JSON", file_text("config.json", "{n_layer: 1"), "config.json"),
        ("config a 5000-digit number", config_with(n_layer=int("9" * 4000)), "n_layer"),
        ("vocab.json not JSON", file_text("vocab.json", '{"a": '), "vocab.json"),
        ("vocab.json nested 100k deep", file_text("vocab.json", "[" * DEEP + "]" * DEEP), "vocab.json"),
        ("vocab.json a 5000-digit id", file_text("vocab.json", lambda t: t.rstrip()[:-1] + ', "zz": '
                                                 + "9" * 5000 + "}"), "vocab.json"),
        ("vocab.json an id of 2^40", vocab_with(f'"zz": {2**40}'), "vocab.json"),
        ("vocab.json a negative id", vocab_with('"zz": -1'), "vocab.json"),
        ("vocab.json an id twice", vocab_with('"zz": 5'), "vocab.json"),
        ("vocab.json a list", file_text("vocab.json", '["a", "b"]'), "vocab.json"),
        ("vocab.json not UTF-8", file_text("vocab.json", b'{"\xff\xfe": 0}'), "vocab.json"),
        ("merges.txt a token the vocabulary lacks", file_text("merges.txt", lambda t: t + "qqq zzz\n"),
         "merges.txt"),
        ("merges.txt a line of three", file_text("merges.txt", lambda t: t + "a b c\n"), "merges.txt"),
        ("merges.txt not UTF-8", file_text("merges.txt", b"#version: 0.2\n\xff\xfe \xfd\n"), "merges.txt"),
        ("model.safetensors a directory", damaged_model(lambda m: (m.joinpath("model.safetensors").unlink(),
                                                                    m.joinpath("model.safetensors").mkdir())),
         "model.safetensors"),
        ("model.safetensors a link loop", damaged_model(lambda m: (m.joinpath("model.safetensors").unlink(),
                                                                   m.joinpath("model.safetensors").symlink_to(
                                                                       "model.safetensors"))), "model.safetensors"),
        ("model.safetensors a pickle", damaged_model(lambda m: pickle_file(m / "model.safetensors",
                                                                          m.parent.parent / "pickle.ran")),
         "model.safetensors"),
    ]
    attacks = [attack(name, "crafted", lens, refused(fragment), setup=setup, quick=i % 6 == 0)
               for i, (name, setup, fragment) in enumerate(model)]
    attacks += [attack(f"weights only a pickle {name}", "crafted", lens, refused(), setup=pickled_model(name),
                       quick=name == "pytorch_model.bin")
                for name in ("pytorch_model.bin", "model.pt", "model.ckpt")]
    attacks.append(attack("--weights a pickle file", "crafted", [*LENS, "--weights", "<D>/m/model.bin"], refused(),
                          setup=pickled_model("model.bin")))
    tokens = [  # a token folder `prepare` wrote, damaged: train refuses it before building a model
        ("meta.json not JSON", text_file("meta.json", "{"), "meta.json"),
        ("meta.json nested 100k deep", text_file("meta.json", '{"a":' * DEEP + "1" + "}" * DEEP), "meta.json"),
        ("meta.json another tokenizer (defect 4)", json_edit("meta.json", tokenizer="sha256:" + "0" * 64),
         "tokenizer"),
        ("meta.json a list", text_file("meta.json", "[]"), "meta.json"),
        ("train.bin an odd number of bytes", lambda t: t.joinpath("train.bin").write_bytes(
            t.joinpath("train.bin").read_bytes() + b"\1"), "train.bin"),
        ("train.bin an id past the vocabulary", lambda t: t.joinpath("train.bin").write_bytes(
            t.joinpath("train.bin").read_bytes()[:-2] + b"\xff\xff"), "vocabulary"),
        ("val.bin missing", lambda t: t.joinpath("val.bin").unlink(), "val.bin"),
    ]
    attacks += [attack(f"token folder: {name}", "crafted", ["train", "<D>/t", "-o", "<D>/run", "--tokenizer", "<TOK>",
                                                             *SHAPE, *RUN], refused(fragment),
                       setup=copy_of("T", "t", edit), quick=i == 2) for i, (name, edit, fragment) in enumerate(tokens)]
    header = "step,train_loss,val_loss,learning_rate,tokens_per_second,grad_norm\n"
    runs = [  # a finished run, damaged: --resume refuses it in one line and leaves it for the user to repair
        ("log.csv header damaged", text_file("log.csv", "step,oops\n1,2\n"), "log.csv"),
        ("log.csv a step that is no number", text_file("log.csv", header + "x,,,,,\n"), "log.csv"),
        ("log.csv a short row", text_file("log.csv", header + "0,1,2\n"), "log.csv"),
        ("log.csv binary", text_file("log.csv", b"\x00\xff" * 100), "log.csv"),
        ("trainer_state.json not JSON", text_file("checkpoint/trainer_state.json", "{"), "trainer_state"),
        ("trainer_state.json step -5", json_edit("checkpoint/trainer_state.json", step=-5), "step"),
        ("optimizer state missing", lambda r: (r / "checkpoint" / "optimizer.safetensors").unlink(), "optimizer"),
    ]
    attacks += [attack(f"run: {name}", "crafted", ["train", "<T>", "-o", "<D>/run", "--resume", "--steps", "8",
                                                   "--quiet"], refused(fragment), setup=copy_of("R", "run", edit),
                       quick=i == 0) for i, (name, edit, fragment) in enumerate(runs)]
    attacks += [
        attack("corpus: one file with an invalid byte is named (minor)", "crafted",
               ["prepare", "<D>/c", "-o", "<D>/t", "--tokenizer", "<TOK>"],
               succeeds(stderr_says("not UTF-8")), setup=copy_of("C", "c", text_file("bad.txt", b"ok \xff ok\n"))),
        attack("corpus: only binary files", "crafted", ["prepare", "<D>/c", "-o", "<D>/t", "--tokenizer", "<TOK>"],
               refused("UTF-8"), setup=lambda d, f: made(("dir", "c"))(d, f) or d.joinpath("c/a.txt").write_bytes(
                   b"\xff\xfe\x00" * 100)),
        attack("--norm nested 10k deep", "crafted", ["init", "-o", "<D>/m", "--tokenizer", "<TOK>", "--norm",
                                                      '{"ln_f":' * ARGV_DEEP + '"none"' + "}" * ARGV_DEEP],
               refused("--norm")),
        attack("--norm names a site the model lacks", "crafted", ["init", "-o", "<D>/m", "--tokenizer", "<TOK>", *SHAPE,
                                                                  "--norm", '{"h.7.ln_1": "none"}'],
               refused("h.7.ln_1")),
        attack("text argument not UTF-8", "crafted", ["lens", "the \udcff cat", "--weights", "<W>", "--no-plot"],
               refused("UTF-8")),
        attack("compare: another vocabulary (defect 4)", "crafted",
               ["compare", "the cat", "--weights", "<W>", "--against", "<D>/m", "--no-plot", "-o", "<D>/out"],
               refused("vocabular"), setup=file_text("vocab.json", lambda t: json.dumps(
                   dict(zip(json.loads(t), reversed(list(json.loads(t).values()))))))),
        attack("train on tokens of another tokenizer (defect 4)", "crafted",
               ["train", "<T>", "-o", "<D>/run", "--tokenizer", "<D>/m", *SHAPE, *RUN], refused("tokenizer"),
               setup=file_text("merges.txt", lambda t: "\n".join(t.splitlines()[:-3]) + "\n")),
        attack("resume on another split (defect 5)", "crafted",
               ["train", "<C>", "-o", "<D>/run", "--resume", "--val-fraction", "0.3", "--quiet"], refused(),
               setup=copy_of("R", "run")),
        attack("resume on another corpus (defect 5)", "crafted",
               ["train", "<D>/c", "-o", "<D>/run", "--resume", "--steps", "8", "--quiet"], refused(),
               setup=both(copy_of("R", "run"), copy_of("C", "c", text_file("more.txt", "another file of text\n")))),
        attack("generate on weights that overflow", "crafted", ["generate", "the cat", "--weights", "<D>/m", "--seed",
                                                                "0", "--max-new-tokens", "4"],
               refused("NaN or infinite"), setup=tensors_edit(lambda t: t["ln_f.weight"].__setitem__(
                   slice(None), 3e38))),
    ]
    return attacks


def kill_attacks() -> list[Attack]:
    """A signal at the Nth call of a function that writes, then the same command with --resume (or again)."""
    train_out = [*TRAIN, "-o", "<D>/run"]
    prepare_out = [*PREPARE, "-o", "<D>/t"]
    remove_out = [*REMOVE_LN, "-o", "<D>/rl"]
    users_in_run = made(("file", "run/notes.txt"), ("file", "run/model/thesis.txt"),
                        ("file", "run/step-000003/mine.txt"))
    points = [  # (command, argv, module, function, calls, signals, setup)
        ("train", train_out, "os", "replace", (1, 6, 14), ("SIGKILL",), users_in_run),
        ("train", train_out, "os", "rename", (2,), ("SIGKILL",), users_in_run),
        ("train", train_out, "minigpt_geom.io.model_files", "save_file", (1, 4), ("SIGKILL", "SIGTERM"), None),
        ("train", train_out, "minigpt_geom.io.checkpoint_folder", "replace_link", (1, 7), ("SIGKILL", "SIGINT"),
         users_in_run),
        ("train", train_out, "minigpt_geom.io.checkpoint_folder", "record", (4,), ("SIGKILL",), None),
        ("prepare", prepare_out, "os", "replace", (1, 3), ("SIGKILL", "SIGTERM"), None),
        ("prepare", prepare_out, "minigpt_geom.text.token_files", "write_ranges", (2,), ("SIGKILL",),
         copy_of("T2", "t")),
        ("prepare", prepare_out, "minigpt_geom.text.token_files", "switch_token_files", (1,), ("SIGINT",),
         copy_of("T2", "t")),
        ("remove-ln", remove_out, "minigpt_geom.io.model_files", "save_file", (2,), ("SIGKILL", "SIGINT"), None),
        ("remove-ln", remove_out, "minigpt_geom.io.checkpoint_folder", "replace_link", (11,), ("SIGKILL",), None),
    ]
    attacks = []
    for i, (command, argv, module, function, calls, signals, setup) in enumerate(points):
        for nth in calls:
            for signame in signals:
                name = f"{command}: {signame} after {module.rsplit('.', 1)[-1]}.{function} #{nth}"
                sample = i in (0, 5, 8) and (nth, signame) == (calls[0], signals[0])  # one a command in --quick
                attacks.append(attack(name, "kills", argv, succeeds(), setup=setup, how="kill",
                                      kill=(module, function, nth, signame), quick=sample,
                                      resume=CONTINUE.get(command, ()), timeout=180))
    attacks.append(attack("train: a plain --resume after --stop-at goes on to the end (defect 10)", "kills",
                          CONTINUE["train"], succeeds(last_logged("run/log.csv", "6")), setup=copy_of("R4", "run")))
    attacks.append(attack("train: SIGKILL in --resume's rewrite of log.csv (minor)", "kills", CONTINUE["train"],
                          succeeds(), setup=copy_of("R4", "run"), how="kill",
                          kill=("minigpt_geom.io.files", "atomic_write", 1, "SIGKILL"), timeout=180))
    return attacks


def disk_attacks() -> list[Attack]:
    """Commands writing onto a full file system (a small tmpfs, else RLIMIT_FSIZE): the outputs complete or absent,
    the earlier ones intact, one line."""
    disk = "<D>/disk"
    records = refused_keeping_records()  # run folders: created holding their records alone
    full = [  # (name, argv, setup of the earlier outputs on the disk, free bytes[, expected])
        ("init -o on a full disk", ["init", "-o", f"{disk}/m", "--tokenizer", "<TOK>", *SHAPE], None, 20_000, records),
        ("prepare over earlier token files (defect 14)", [*PREPARE, "-o", f"{disk}/t"], "T", 24_000),
        ("train: the first checkpoint does not fit", [*TRAIN, "-o", f"{disk}/run"], None, 60_000, records),
        ("train --resume: a checkpoint does not fit", ["train", "<T>", "-o", f"{disk}/run", "--resume", "--steps", "10",
                                                       "--quiet"], "R", 40_000, records),
        ("remove-ln -o on a full disk", [*REMOVE_LN, "-o", f"{disk}/rl"], None, 60_000, records),
        ("report -o on a full disk", ["report", "the cat sat", "--weights", "<W>", "-o", f"{disk}/r.html"], None,
         8_000),
        ("lens -o over an earlier lens", ["lens", "the cat sat", "--weights", "<W>", "-o", f"{disk}/lens", "--quiet"],
         "lens", 4_000),
        ("tokenizer -o on a full disk", ["tokenizer", "<C>", "-o", f"{disk}/bpe", "--vocab-size", "300", "--pattern",
                                         "*.txt", "--quiet"], None, 2_000),
        ("qk -o on a full disk", ["qk", "--weights", "<W>", "-o", f"{disk}/qk", "--quiet"], None, 4_000),
        ("drift -o on a full disk", ["drift", "<C>", "--weights", "<W>", "-o", f"{disk}/drift", "--max-windows", "2",
                                     "--quiet"], None, 4_000),
    ]
    attacks = [attack(name, "disk", argv, expected[0] if expected else refused(), setup=tmpfs_setup(earlier, free),
                      how="disk", quick=i in (1, 2)) for i, (name, argv, earlier, free, *expected) in enumerate(full)]
    fsize = [  # the way without root: a file-size limit (writes fail with EFBIG)
        ("init under ulimit -f", ["init", "-o", "<D>/m", "--tokenizer", "<TOK>", *SHAPE], 40_000),
        ("prepare under ulimit -f", [*PREPARE, "-o", "<D>/t"], 20_000),
        ("train under ulimit -f", [*TRAIN, "-o", "<D>/run"], 60_000),
    ]
    attacks += [attack(name, "disk", argv, records, limits=((resource.RLIMIT_FSIZE, limit),))
                for name, argv, limit in fsize]
    attacks += [attack(f"{cmd} with stdout on /dev/full", "disk", argv, refused(), stdout="/dev/full", quick=i == 0)
                for i, (cmd, argv) in enumerate([
                    ("generate", ["generate", "the cat", "--weights", "<W>", "--seed", "0", "--max-new-tokens", "20"]),
                    ("lens", [*LENS, "--weights", "<W>"]),
                    ("norms", ["norms", "the cat sat on the mat", "--weights", "<W>", "--quiet"])])]
    return attacks


def paths_attacks() -> list[Attack]:
    """Outputs that are devices, FIFOs, links, folders, read-only, empty or oddly named; the user's folders in -o."""
    report = ["report", "the cat sat", "--weights", "<W>", "--quiet", "-o"]
    chr_ = stat.S_ISCHR
    cases = [
        attack("report -o a character device (defect 1)", "paths", [*report, "<D>/x"],
               succeeds(is_kind("x", chr_, "a character device")), setup=made(("null", "x")), quick=True),
        attack("report -o a link to a device", "paths", [*report, "<D>/link"],
               succeeds(all_of(is_kind("link", stat.S_ISLNK, "a link"), is_kind("x", chr_, "a device"))),
               setup=made(("null", "x"), ("link", "link->x"))),
        attack("report -o a FIFO nobody reads", "paths", [*report, "<D>/fifo"], refused("FIFO"),
               setup=made(("fifo", "fifo")), quick=True),
        attack("report -o a link to the user's file", "paths", [*report, "<D>/link.html"],
               succeeds(all_of(is_kind("link.html", stat.S_ISLNK, "a link"), lambda d: None if "<html" in
                               d.joinpath("mine.html").read_text().lower() else "the target was not written")),
               setup=made(("file", "mine.html"), ("link", "link.html->mine.html"))),
        attack("report -o a dangling link", "paths", [*report, "<D>/dangling.html"],
               succeeds(all_of(is_kind("dangling.html", stat.S_ISLNK, "a link"), holds("target.html"))),
               setup=made(("link", "dangling.html->target.html"))),
        attack("report -o a link loop", "paths", [*report, "<D>/loop"], refused("loop"),
               setup=made(("link", "loop->loop"))),
        attack("report -o through a file", "paths", [*report, "<D>/mine.txt/r.html"], refused(),
               setup=made(("file", "mine.txt"))),
        attack("report -o '' (minor)", "paths", [*report, ""], refused("empty path"), quick=True),
        attack("lens -o '' (minor)", "paths", [*LENS, "--weights", "<W>", "-o", ""], refused("empty path")),
        attack("prepare '' (minor)", "paths", ["prepare", "", "-o", "<D>/t", "--tokenizer", "<TOK>"],
               refused("empty path")),
        attack("qk --vocab-from '' (minor)", "paths", ["qk", "--weights", "<W>", "--vocab-from", ""],
               refused("empty path")),
        attack("init -o ''", "paths", ["init", "-o", "", "--tokenizer", "<TOK>"], refused("empty path")),
        attack("--weights ''", "paths", [*LENS, "--weights", ""], refused("empty path")),
        attack("report -o a name with a newline", "paths", [*report, "<D>/a\nb.html"], succeeds(holds("a\nb.html"))),
        attack("report -o a name with spaces and unicode", "paths", [*report, "<D>/é ü 日本.html"],
               succeeds(holds("é ü 日本.html"))),
        attack("report -o a name of invalid UTF-8", "paths", [*report, "<D>/\udcff.html"],
               succeeds(lambda d: None if os.path.exists(os.path.join(os.fsencode(d), b"\xff.html"))
                        else "not written")),
        attack("train -o a file (minor)", "paths", [*TRAIN, "-o", "<D>/notes.txt"], refused("is a file"),
               setup=made(("file", "notes.txt")), quick=True),
        attack("train -o a character device", "paths", [*TRAIN, "-o", "<D>/x"], refused(),
               setup=made(("null", "x"))),
        attack("lens -o DIR whose figure name is a folder (defect 13)", "paths",
               ["lens", "the cat sat", "--weights", "<W>", "-o", "<D>/lens", "--quiet"], refused("lens_grid.png"),
               setup=made(("file", "lens/lens.csv"), ("dir", "lens/lens_grid.png"))),
        attack("trajectory -o DIR with a FIFO among its outputs (defect 13)", "paths",
               ["trajectory", "the cat sat", "--weights", "<W>", "-o", "<D>/tr", "--quiet"], refused("FIFO"),
               setup=made(("dir", "tr"), ("fifo", "tr/trajectory.csv"), ("fifo", "tr/trajectory.png"),
                          ("fifo", "tr/trajectory.html"))),
        attack("init -o proj with the user's proj/model (defect 2)", "paths",
               ["init", "-o", "<D>/proj", "--tokenizer", "<TOK>", *SHAPE],
               succeeds(all_of(users("proj/model/thesis.txt"), holds("proj/model.safetensors"))),
               setup=made(("file", "proj/model/thesis.txt")), quick=True),
        attack("init --overwrite with the user's step-N, model.N, .model.tmp (defect 2)", "paths",
               ["init", "-o", "<D>/proj", "--tokenizer", "<TOK>", *SHAPE, "--overwrite"],
               succeeds(all_of(*(users(f"proj/{n}/x.txt") for n in ("step-000001", "model.1", ".model.tmp",
                                                                     ".step-000002.tmp")))),
               setup=both(copy_of("W", "proj"), made(*(("file", f"proj/{n}/x.txt") for n in
                                                        ("step-000001", "model.1", ".model.tmp",
                                                         ".step-000002.tmp"))))),
        attack("train -o with the user's step-000003 and model/ (defect 2)", "paths", [*TRAIN, "-o", "<D>/run"],
               succeeds(all_of(users("run/step-000003/mine.txt"), users("run/model/thesis.txt"))),
               setup=made(("file", "run/step-000003/mine.txt"), ("file", "run/model/thesis.txt"))),
        attack("init -o with the user's config.json", "paths", ["init", "-o", "<D>/proj", "--tokenizer", "<TOK>"],
               refused("config.json"), setup=made(("file", "proj/config.json"))),
        attack("remove-ln -o the run being trained (defect 3)", "paths", [*REMOVE_LN, "-o", "<D>/run", "--overwrite"],
               refused("another process"), setup=copy_of("R", "run"), how="locked"),
        attack("init --overwrite the run being trained (defect 3)", "paths",
               ["init", "-o", "<D>/run", "--tokenizer", "<TOK>", "--overwrite"], refused("another process"),
               setup=copy_of("R", "run"), how="locked"),
        attack("prepare into a folder being prepared", "paths", [*PREPARE, "-o", "<D>/t"], refused("another process"),
               setup=copy_of("T", "t"), how="locked"),
        attack("train -o inside the corpus", "paths", ["train", "<D>/c", "-o", "<D>/c/run", "--tokenizer", "<TOK>",
                                                       *SHAPE, *RUN], refused(), setup=copy_of("C", "c")),
        attack("prepare a FIFO corpus (minor)", "paths", ["prepare", "<D>/f.txt", "-o", "<D>/t", "--tokenizer",
                                                          "<TOK>"], refused("FIFO"), setup=made(("fifo", "f.txt")),
               quick=True),
        attack("prepare a folder with a FIFO among its files: left out", "paths",
               ["prepare", "<D>/c", "-o", "<D>/t", "--tokenizer", "<TOK>"],
               succeeds(lambda d: "the FIFO was read" if "zz.txt" in d.joinpath("t/meta.json").read_text() else None),
               setup=both(copy_of("C", "c"), made(("fifo", "c/zz.txt")))),
        attack("prepare: a corpus file replaced by a FIFO mid-run (defect 8)", "paths",
               ["prepare", "<D>/c", "-o", "<D>/t", "--tokenizer", "<TOK>", "--quiet"], refused("FIFO"),
               setup=copy_of("C", "c"), how="inject", kill=("minigpt_geom.text.token_files", "is_utf8", 3,
                                                            "FIFO:c/textwrap.txt"), timeout=60),
        attack("train -o a link loop", "paths", [*TRAIN, "-o", "<D>/loop"], refused("loop"),
               setup=made(("link", "loop->loop"))),
        attack("prepare a character device", "paths", ["prepare", "<D>/zero.txt", "-o", "<D>/t", "--tokenizer",
                                                       "<TOK>"], refused(), setup=made(("zero", "zero.txt"))),
        attack("--weights a character device", "paths", [*LENS, "--weights", "<D>/zero.safetensors"], refused(),
               setup=made(("zero", "zero.safetensors"))),
        attack("--weights a FIFO", "paths", [*LENS, "--weights", "<D>/f.safetensors"], refused(),
               setup=made(("fifo", "f.safetensors"))),
        attack("--tokenizer with a FIFO vocab.json", "paths", [*LENS, "--weights", "<W>", "--tokenizer", "<D>/tok"],
               refused("vocab.json"), setup=both(copy_of("TOK", "tok", lambda t: (t.joinpath("vocab.json").unlink(),
                                                                                  os.mkfifo(t / "vocab.json"))))),
        attack("qk --vocab-from a device", "paths", ["qk", "--weights", "<W>", "--vocab-from", "<D>/zero"],
               refused(), setup=made(("zero", "zero"))),
        attack("prepare --pattern '*' again into a token folder inside the corpus (minor)", "paths",
               ["prepare", "<D>/c", "-o", "<D>/c/t", "--tokenizer", "<TOK>", "--pattern", "*", "--quiet"],
               succeeds(lambda d: "meta.json was read as text" if any(
                   "/t/" in f[0] for f in json.loads(d.joinpath("c/t/meta.json").read_text())["files"]) else None),
               setup=both(copy_of("C", "c"), copy_of("T", "c/t"))),
        attack("prepare --pattern absolute", "paths", ["prepare", "<C>", "-o", "<D>/t", "--tokenizer", "<TOK>",
                                                       "--pattern", "/etc/*"], refused("inside the corpus")),
        attack("prepare --pattern ../", "paths", ["prepare", "<C>", "-o", "<D>/t", "--tokenizer", "<TOK>",
                                                  "--pattern", "../*.txt"], refused("inside the corpus")),
        attack("compare --labels '$$' (defect 12)", "paths", ["compare", "the cat", "--weights", "<W>", "--against",
                                                              "<W>", "--labels", "$$", "b", "-o", "<D>/out"],
               refused("mathtext")),
        attack("lens to a stdout of PYTHONIOENCODING=ascii (defect 12)", "paths", [*LENS, "--weights", "<W>"],
               succeeds(), env=(("PYTHONIOENCODING", "ascii"),)),
        attack("generate to a stdout of PYTHONIOENCODING=ascii (defect 12)", "paths",
               ["generate", "the cat", "--weights", "<W>", "--seed", "0", "--max-new-tokens", "8"], succeeds(),
               env=(("PYTHONIOENCODING", "ascii"),)),
        attack("checkpoint files honour the umask like config.json (defect 15)", "paths", [*TRAIN, "-o", "<D>/run"],
               succeeds(same_modes("run/checkpoint", "config.json", "model.safetensors", "optimizer.safetensors"))),
        attack("read-only -o folder", "paths", ["init", "-o", "<D>/ro/m", "--tokenizer", "<TOK>", *SHAPE],
               refused(), how="readonly"),
        attack("read-only working folder, default -o (minor)", "paths", [*LENS[:2], "--weights", "<W>", "--quiet"],
               refused(), how="readonly"),
    ]
    return cases


def sizes_attacks() -> list[Attack]:
    """Sizes no memory holds: refused before allocating, one line, the child's peak RSS bounded."""
    train = [*TRAIN, "-o", "<D>/run"]
    cases = [
        ("train --eval-windows 1e9 (defect 7)", [*train, "--eval-windows", "1000000000"], "eval"),
        ("train --batch-size 1e9 --micro-batch 1 (defect 7)", [*train, "--batch-size", "1000000000", "--micro-batch",
                                                               "1"], "batch"),
        ("train --micro-batch 1e9", [*train, "--batch-size", "1000000000", "--micro-batch", "1000000000"], ""),
        ("train --context 1e9", [*train, "--context", "1000000000"], "context"),
        ("train --n-embd 2^40", ["train", "<T>", "-o", "<D>/run", "--tokenizer", "<TOK>", "--n-embd", str(2**40),
                                 "--n-head", "1", *RUN], ""),
        ("train --seed 2^64", [*train, "--seed", str(2**64)], "--seed"),
        ("train --seed of 5000 digits", [*train, "--seed", "9" * 5000], "--seed"),
        ("train --split-seed -1", [*train, "--split-seed", "-1"], "--split-seed"),
        ("train --lr 1e38", [*train, "--lr", "1e38"], "--lr"),
        ("init --n-layer 1e9", ["init", "-o", "<D>/m", "--tokenizer", "<TOK>", "--n-layer", "1000000000"], ""),
        ("init gpt2-xl --n-embd 65536", ["init", "-o", "<D>/m", "--init", "gpt2-xl", "--n-embd", "65536"], ""),
        ("drift --batch-size 1e9", ["drift", "<C>", "--weights", "<W>", "--batch-size", "1000000000", "--no-plot"],
         ""),
        ("drift --context 1e9", ["drift", "<C>", "--weights", "<W>", "--context", "1000000000", "--no-plot"], ""),
        ("report --dpi 1e9", ["report", "the cat", "--weights", "<W>", "-o", "<D>/r.html", "--dpi", "1000000000"],
         "--dpi"),
        ("lens of a text past the context", [*LENS[:1], "the cat " * 1000, *LENS[2:], "--weights", "<W>"], "context"),
        ("generate --seed 2^64", ["generate", "the cat", "--weights", "<W>", "--seed", str(2**64)], "--seed"),
        ("remove-ln --steps 0", [*REMOVE_LN, "-o", "<D>/rl", "--steps", "0"], "--steps"),
    ]
    attacks = [attack(name, "sizes", argv, refused(fragment), quick=i % 5 == 0, limits=SAFETY)
               for i, (name, argv, fragment) in enumerate(cases)]
    attacks += [attack(name, "sizes", argv, refused(fragment), limits=SAFETY) for name, argv, fragment in [
        ("verify --tolerance nan (minor)", ["verify", "--weights", "<W>", "--tolerance", "nan"], "--tolerance"),
        ("verify --tolerance -1 (minor)", ["verify", "--weights", "<W>", "--tolerance", "-1"], "--tolerance"),
        ("generate --max-new-tokens -1 (minor)", ["generate", "--weights", "<W>", "--max-new-tokens", "-1"],
         "--max-new-tokens"),
        ("trajectory --word '' (minor)", ["trajectory", "the cat", "--weights", "<W>", "--word", ""], "--word")]]
    attacks.append(attack("train --lr 1e20 --grad-clip 0: NaN validation, no checkpoint (defect 6)", "sizes",
                          [*train, "--lr", "1e20", "--grad-clip", "0", "--eval-interval", "1"],
                          refused_keeping_records("not finite"), limits=SAFETY))
    attacks += [attack(name, "sizes", argv, succeeds(), limits=SAFETY) for name, argv in [
        ("generate --top-p 1e-300 samples the likeliest (defect 12)", ["generate", "the cat", "--weights", "<W>",
                                                                       "--top-p", "1e-300", "--seed", "1"]),
        ("report of a one-token text (defect 12)", ["report", "a", "--weights", "<W>", "-o", "<D>/r.html",
                                                    "--quiet"]),
        ("qk -k 2e9 over a vocabulary of 300: at most V² pairs", ["qk", "--weights", "<W>", "-k", "2000000000"]),
        ("qk --chunk-size 1e12", ["qk", "--weights", "<W>", "--chunk-size", "1000000000000", "-k", "3"])]]
    attacks += [
        attack("train --steps 10^30 trains in bounded memory until Ctrl-C", "sizes", [*train, "--steps", str(10**30)],
               succeeds(), how="streams"),
        attack("a sparse 24 GiB checkpoint (defect 7)", "sizes", [*LENS, "--weights", "<D>/m"], refused(),
               setup=sparse_safetensors(3 * 2**27, 16), quick=True, limits=SAFETY),
        attack("a sparse 2 GiB config.json", "sizes", [*LENS, "--weights", "<D>/m"], refused("config.json"),
               setup=damaged_model(lambda m: os.truncate(m / "config.json", 2**31))),
        attack("a sparse 2 GiB vocab.json", "sizes", [*LENS, "--weights", "<D>/m"], refused("vocab.json"),
               setup=damaged_model(lambda m: os.truncate(m / "vocab.json", 2**31))),
        attack("a saved state's eval_windows 1e9 (defect 7)", "sizes",
               ["train", "<T>", "-o", "<D>/run", "--resume", "--steps", "8", "--quiet"], refused("eval"),
               how="state-windows", limits=SAFETY),
        attack("a batch that fits the machine but not ulimit -v", "sizes",
               [*train, "--batch-size", "250000", "--micro-batch", "250000"], refused(),
               limits=((resource.RLIMIT_AS, 6 * 2**30),)),
        attack("qk --vocab-from a 40 MB file read in bounded memory (defect 7)", "sizes",
               ["qk", "--weights", "<W>", "--vocab-from", "<D>/big.txt", "-k", "3"],
               succeeds(), setup=lambda d, f: d.joinpath("big.txt").write_text("the cat sat on the mat\n" * 1_800_000),
               timeout=240),
        attack("generate --max-new-tokens 10^30 streams in bounded memory", "sizes",
               ["generate", "the cat", "--weights", "<W>", "--seed", "0", "--max-new-tokens", str(10**30)],
               succeeds(), how="streams"),
    ]
    return attacks


def torchrun_attacks() -> list[Attack]:
    """Two ranks of a gloo process group started as torchrun starts them, one with other options; a lost peer."""
    train = [*TRAIN, "-o", "<D>/run"]
    drift = ["drift", "<C>", "--weights", "<W>", "-o", "<D>/drift", "--no-plot", "--quiet", "--max-windows", "4",
             "--context", "16"]
    cases = [
        ("train: rank 1 with another --steps", train, ("--steps", "7"), "steps"),
        ("train: rank 1 with another --context", train, ("--context", "8"), "context"),
        ("train: rank 1 with another --lr", train, ("--lr", "0.001"), "--lr"),
        ("train: rank 1 with another --seed", train, ("--seed", "1"), "seed"),
        ("train: rank 1 on another split", train, ("--val-fraction", "0.3"), "val"),
        ("train: rank 1 with another tokenizer", train, ("--tokenizer", "<TOK2>"), "tokenizer"),
        ("drift: rank 1 with another --context (defect 9)", drift, ("--context", "8"), "context"),
        ("drift: rank 1 with another --max-windows (defect 9)", drift, ("--max-windows", "2"), "max"),
        ("drift: rank 1 on another corpus (defect 9)", drift, ("--pattern", "s*.txt"), "pattern"),
    ]
    attacks = [attack(name, "torchrun", argv, refused(fragment), how="ranks", ranks=((), extra), timeout=180,
                      quick=i in (1, 6)) for i, (name, argv, extra, fragment) in enumerate(cases)]
    attacks.append(attack("train: a lost peer (SIGKILL of rank 1) (defect 16)", "torchrun",
                          [*train, "--steps", "100000", "--eval-interval", "1000"], refused("rank 1"), how="lost-peer",
                          timeout=240))
    attacks.append(attack("drift: 2 ranks give the single process's drift.csv (defect 9)", "torchrun",
                          drift, succeeds(), how="ranks-vs-one",
                          ranks=((), ()), timeout=180))
    return attacks


def tmpfs_setup(earlier: str | None, free: int) -> Callable[[Path, dict], None]:
    """A setup for how="disk": <D>/disk is filled (by the runner) up to `free` bytes, after copying the fixture
    `earlier` there (an earlier output the full disk must leave intact)."""
    def setup(folder: Path, fixtures: dict) -> None:
        disk = folder / "disk"
        if earlier == "lens":
            (disk / "lens").mkdir()
            (disk / "lens" / "lens.csv").write_text("an earlier lens\n")
        elif earlier is not None:
            target = {"T": "t", "R": "run"}[earlier]
            shutil.copytree(fixtures[earlier], disk / target, symlinks=True)
        fill(disk, free)
    setup.tmpfs = True  # type: ignore[attr-defined]
    return setup


def fill(disk: Path, free: int) -> None:
    """Leave about `free` bytes free on the file system of `disk` (a filler file takes the rest)."""
    info = os.statvfs(disk)
    spare = info.f_bavail * info.f_frsize - free
    if spare > 0:
        with (disk / "filler").open("wb") as f:
            f.write(b"\0" * spare)


# ---- running an attack ----------------------------------------------------------------------------------------

@dataclass
class Child:
    """What a child process did: its exit code (negative: the signal), stdout, stderr, peak RSS in bytes."""
    code: int
    out: str
    err: str
    peak: int
    seconds: float


def environment(fixtures: dict, extra: tuple[tuple[str, str], ...] = ()) -> dict:
    """The children's environment: this tree's package, one thread, offline, caches inside the work folder."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(fixtures["root"] / "cache"),
           "HF_HOME": str(fixtures["root"] / "hf"), "MINIGPT_GEOM_WEIGHTS": "", "PYTHONUNBUFFERED": "1"}
    for key, value in extra:
        if value:
            env[key] = value
        else:
            env.pop(key, None)
            if key == "HOME":
                env.pop("XDG_CACHE_HOME", None)
    return env


def spawn(argv: list[str], cwd: Path, env: dict, log: Path, *, limits=(), stdout: str | None = None,
          python: list[str] | None = None) -> subprocess.Popen:
    """Start `python -m minigpt_geom argv` (or python + `python`), its stdout and stderr into log.out / log.err
    (in a process group of its own, under the rlimits given)."""
    def limited() -> None:  # in the child, before exec: a few system calls, no lock another thread could hold
        for which, value in limits:
            resource.setrlimit(which, (value, value))
    with open(stdout or log.with_suffix(".out"), "wb") as out, open(log.with_suffix(".err"), "wb") as err:
        return subprocess.Popen([sys.executable, *(python or ["-m", "minigpt_geom"]), *argv], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                                preexec_fn=limited if limits else None)


def finish(process: subprocess.Popen, log: Path, timeout: float, stop: int = signal.SIGKILL) -> Child:
    """Wait for the child (os.wait4: its own peak RSS), sending `stop` to its group at the timeout."""
    start, deadline, sent = time.monotonic(), time.monotonic() + timeout, False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline and not sent:
            os.killpg(process.pid, stop)
            sent, deadline = True, time.monotonic() + 30
        elif time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    read = lambda suffix: log.with_suffix(suffix).read_text(errors="replace") if log.with_suffix(suffix).exists() \
        else ""
    return Child(process.returncode, read(".out"), read(".err"), usage.ru_maxrss * 1024,
                 time.monotonic() - start)


def substitute(argv, fixtures: dict, folder: Path) -> list[str]:
    """argv with <KEY> replaced by the fixture's path and <D> by the attack's folder."""
    words = []
    for word in argv:
        for key, path in (("D", folder), *fixtures.items()):
            word = word.replace(f"<{key}>", str(path))
        words.append(word)
    return words


def snapshot(folder: Path) -> dict:
    """Every entry under folder (links not followed): type and mode, size, the bytes' hash (small files) or
    mtime, a link's target."""
    entries = {}
    for path in [folder, *folder.rglob("*")] if folder.exists() else []:
        info = os.lstat(path)
        what = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode))
        if stat.S_ISLNK(info.st_mode):
            what += (os.readlink(path),)
        elif stat.S_ISREG(info.st_mode):
            what += ((info.st_size, hashlib.sha1(path.read_bytes()).hexdigest()) if info.st_size < 64 * MIB
                     else (info.st_size, info.st_mtime_ns))
        entries[str(path.relative_to(folder))] = what
    return entries


def changes(before: dict, after: dict, tolerate: tuple[str, ...] = ()) -> str | None:
    """What differs between two snapshots, briefly; None if nothing. A lock file is made before any check; the
    names in `tolerate` (and new folders, then) may appear or change."""
    def allowed(name: str) -> bool:
        return name.endswith(".lock") or Path(name).name in tolerate or bool(
            tolerate and stat.S_ISDIR(after[name][0]) and name not in before)
    added = [n for n in after if n not in before and not allowed(n)]
    gone = [n for n in before if n not in after]
    changed = [n for n in before if n in after and before[n] != after[n] and not allowed(n)]
    if not (added or gone or changed):
        return None
    return "; ".join(f"{what}: {', '.join(names[:3])}" for what, names in (("added", added), ("removed", gone),
                                                                         ("changed", changed)) if names)


def judged(child: Child, expect: Expect, folder: Path, before: dict | None) -> str | None:
    """None when the child's outcome is the expected one, else why not."""
    lines = child.err.strip().splitlines()
    if "Traceback" in child.err:
        return f"a traceback: {lines[-1][:160] if lines else ''}"
    if child.code != expect.code:
        return f"exit {child.code}, not {expect.code}: {' | '.join(lines)[-200:]}"
    if child.peak > RSS_BOUND:
        return f"peak RSS {child.peak / MIB:.0f} MiB"
    if expect.code == 2:
        if len(lines) != 1:
            return f"{len(lines)} lines on stderr: {' | '.join(lines)[:200]}"
        missing = [f for f in expect.fragments if f.lower() not in lines[0].lower()]
        if missing:
            return f"the line lacks {missing}: {lines[0][:200]}"
        if before is not None and (problem := changes(before, snapshot(folder), expect.tolerate)):
            return f"the folder changed ({problem})"
        return None
    return expect.check(folder) if expect.check is not None else None


@dataclass
class Runner:
    """Runs attacks against fixtures built once; each attack in its own folder under root."""
    root: Path
    fixtures: dict
    can_mount: bool
    references: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def folder(self, attack: Attack) -> Path:
        """A fresh folder for the attack (a safe name), its logs beside it."""
        safe = "".join(c if c.isalnum() else "_" for c in attack.name)[:60] + f"_{abs(hash(attack.name)) % 10**6}"
        folder = self.root / "attacks" / safe
        folder.mkdir(parents=True)
        return folder

    def command(self, attack: Attack, folder: Path, argv=None, log: str = "", **options) -> Child:
        """Run the attack's command (or argv) in folder to its end."""
        log_path = folder.with_name(folder.name + log)
        env = environment(self.fixtures, attack.env)
        process = spawn(substitute(argv or attack.argv, self.fixtures, folder), folder, env, log_path,
                        limits=attack.limits, stdout=attack.stdout, **options)
        return finish(process, log_path, attack.timeout)

    def run(self, attack: Attack) -> tuple[bool, str]:
        """(handled, why not)."""
        folder = self.folder(attack)
        try:
            problem = getattr(self, "run_" + attack.how.replace("-", "_"))(attack, folder)
        except Exception as error:  # the attack's own machinery failed: reported, never hidden
            problem = f"the attack itself failed: {type(error).__name__}: {error}"
        print(f"{'handled' if problem is None else 'LEFT'} ({attack.kind}) {attack.name}"
              f"{': ' + problem if problem else ''}", file=sys.stderr, flush=True)
        return problem is None, problem or ""

    def run_command(self, attack: Attack, folder: Path) -> str | None:
        if attack.setup is not None:
            attack.setup(folder, self.fixtures)
        before = snapshot(folder)
        return judged(self.command(attack, folder), attack.expect, folder, before)

    def run_disk(self, attack: Attack, folder: Path) -> str | None:
        """On a tmpfs of 4 MiB (root only), filled to the attack's free bytes."""
        if not self.can_mount:
            return "needs root to mount a small tmpfs (the ulimit -f attacks cover the rest)"
        disk = folder / "disk"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
        try:
            return self.run_command(attack, folder)
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)

    def run_readonly(self, attack: Attack, folder: Path) -> str | None:
        """In (or into) a read-only file system: a tmpfs mounted ro as root (root ignores a folder's mode)."""
        ro = folder / "ro"
        ro.mkdir()
        if self.can_mount:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
        else:
            ro.chmod(0o555)
        try:
            before = snapshot(folder)
            child = self.command(attack, folder) if "/ro/" in " ".join(attack.argv) else \
                finish(spawn(substitute(attack.argv, self.fixtures, folder), ro, environment(self.fixtures),
                             folder.with_name(folder.name)), folder.with_name(folder.name), attack.timeout)
            return judged(child, attack.expect, folder, before)
        finally:
            if self.can_mount:
                subprocess.run(["umount", "-l", str(ro)], check=False)
            else:
                ro.chmod(0o755)

    def run_locked(self, attack: Attack, folder: Path) -> str | None:
        """While another process holds the folder's lock (a training or a prepare going on)."""
        attack.setup(folder, self.fixtures)
        target = folder / ("t" if "prepare" in attack.argv else "run")
        lock_name = ".prepare.lock" if "prepare" in attack.argv else "run.lock"
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(target / lock_name)], stdout=subprocess.PIPE)
        try:
            holder.stdout.readline()
            before = snapshot(folder)
            return judged(self.command(attack, folder), attack.expect, folder, before)
        finally:
            holder.kill()
            holder.wait()

    def run_state_windows(self, attack: Attack, folder: Path) -> str | None:
        """A finished run whose saved settings say eval_windows = 1e9."""
        shutil.copytree(self.fixtures["R"], folder / "run", symlinks=True)
        state = (folder / "run" / "checkpoint" / "trainer_state.json").resolve()
        saved = json.loads(state.read_text())
        settings = saved.get("settings", saved)
        settings["eval_windows"] = 10**9
        state.write_text(json.dumps(saved))
        before = snapshot(folder)
        return judged(self.command(attack, folder), attack.expect, folder, before)

    def run_streams(self, attack: Attack, folder: Path) -> str | None:
        """A command that may run for ever: stopped by SIGINT after 6 s; its text streamed, its memory bounded."""
        log = folder.with_name(folder.name)
        process = spawn(substitute(attack.argv, self.fixtures, folder), folder, environment(self.fixtures), log)
        child = finish(process, log, 8, stop=signal.SIGINT)
        if "Traceback" in child.err:
            return f"a traceback: {child.err.strip().splitlines()[-1][:160]}"
        if child.peak > RSS_BOUND:
            return f"peak RSS {child.peak / MIB:.0f} MiB"
        if len(child.out) < 20:  # a refusal at once would be bounded too, but it is not what the attack tests
            return f"nothing streamed in 8 s (exit {child.code})"
        if child.code in (0, 130) or (child.code == 2 and len(child.err.strip().splitlines()) == 1):
            return None  # Ctrl-C's 130, or one line (train: the checkpoint it keeps and how to continue)
        return f"exit {child.code} after SIGINT: {child.err.strip()[-200:]}"

    # -- kills ----------------------------------------------------------------------------------------------

    def reference(self, attack: Attack) -> Path:
        """The uninterrupted command's folder (one per command and setup), run once."""
        key = (attack.argv, attack.setup)
        with self.lock:
            if key not in self.references:
                self.references[key] = threading.Event(), None
                owner = True
            else:
                owner = False
            event, _ = self.references[key]
        if owner:
            folder = self.root / "references" / f"ref{len(self.references)}"
            folder.mkdir(parents=True)
            if attack.setup is not None:
                attack.setup(folder, self.fixtures)
            child = self.command(attack, folder, log="")
            self.references[key] = event, (folder if child.code == 0 else None)
            event.set()
        event.wait()
        folder = self.references[key][1]
        if folder is None:
            raise RuntimeError("the uninterrupted command failed")
        return folder

    def run_inject(self, attack: Attack, folder: Path) -> str | None:
        """The kill hook's other action: a file replaced by a FIFO at the Nth call; refused, no output left."""
        attack.setup(folder, self.fixtures)
        child = self.command(attack, folder, python=["-c", KILL_AT, *map(str, attack.kill)])
        problem = judged(child, attack.expect, folder, None)
        left = [p.name for p in folder.rglob("*") if ".tmp" in p.name or ".partial" in p.name]
        return problem or (f"left behind: {left}" if left else None)

    def run_kill(self, attack: Attack, folder: Path) -> str | None:
        """Killed at the Nth call, then resumed (or run again): the uninterrupted run's bytes, the user's files kept."""
        reference = self.reference(attack)
        if attack.setup is not None:
            attack.setup(folder, self.fixtures)
        users_before = {k: v for k, v in snapshot(folder).items() if "mine" in k or "thesis" in k or "notes" in k}
        module, function, nth, signame = attack.kill
        child = self.command(attack, folder, log="_killed",
                             python=["-c", KILL_AT, module, function, str(nth), signame])
        expected_codes = {"SIGKILL": (-9,), "SIGTERM": (-15, 143, 2), "SIGINT": (130, -2, 2)}[signame]
        if "Traceback" in child.err:
            return f"the killed run: a traceback: {child.err.strip().splitlines()[-1][:160]}"
        if child.code == 0:  # it ran to its end: the attack tried nothing
            return f"the kill never fired: {module}.{function} was called fewer than {nth} times"
        if child.code not in expected_codes:
            return f"the killed run ended with {child.code}: {child.err.strip()[-200:]}"
        resumed = self.command(attack, folder, argv=attack.resume or attack.argv, log="_resumed")
        if resumed.code == 2 and attack.resume:  # nothing to resume (killed before the first checkpoint): again
            resumed = self.command(attack, folder, log="_again")
        if resumed.code != 0 or "Traceback" in resumed.err:
            return f"then: exit {resumed.code}: {resumed.err.strip()[-200:]}"
        users_after = {k: v for k, v in snapshot(folder).items() if k in users_before}
        if users_after != users_before:
            return "the user's files in the folder changed"
        return same_outputs(reference, folder)

    # -- ranks of a process group ------------------------------------------------------------------

    def run_ranks(self, attack: Attack, folder: Path) -> str | None:
        """Two ranks that disagree: each ends in one line naming the problem, nothing written."""
        before = snapshot(folder)
        children = [finish(p, log, attack.timeout) for p, log in start_ranks(self, attack, folder)]
        problems = [judged(child, attack.expect, folder, before) for child in children]
        return next((f"rank {i}: {p}" for i, p in enumerate(problems) if p), None)


    def run_lost_peer(self, attack: Attack, folder: Path) -> str | None:
        """Rank 1 SIGKILLed once training runs: rank 0 ends in one line naming rank 1."""
        (first, log0), (second, log1) = start_ranks(self, attack, folder)
        deadline = time.monotonic() + 120
        while not (folder / "run" / "log.csv").exists() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.2)
        time.sleep(1)
        os.killpg(second.pid, signal.SIGKILL)
        finish(second, log1, 10)
        child = finish(first, log0, attack.timeout)
        lines = child.err.strip().splitlines()
        if "Traceback" in child.err:
            return f"a traceback: {lines[-1][:160]}"
        if child.code != 2 or len(lines) != 1 or "rank 1" not in lines[0]:
            return f"rank 0: exit {child.code}, {len(lines)} lines: {' | '.join(lines)[-240:]}"
        return None


    def run_ranks_vs_one(self, attack: Attack, folder: Path) -> str | None:
        """drift on 2 ranks writes the single process's drift.csv (README's promise)."""
        children = [finish(p, log, attack.timeout) for p, log in start_ranks(self, attack, folder)]
        if any(c.code != 0 for c in children):
            return f"2 ranks: exit {[c.code for c in children]}: {children[0].err.strip()[-200:]}"
        one = folder / "one"
        one.mkdir()
        argv = [w.replace("<D>/drift", "<D>/one/drift") for w in attack.argv]
        child = self.command(attack, folder, argv=argv, log="_one")
        if child.code != 0:
            return f"one process: exit {child.code}: {child.err.strip()[-200:]}"
        import numpy as np

        rows = lambda p: [line.split(",") for line in p.read_text().splitlines()]
        two, single = rows(folder / "drift" / "drift.csv"), rows(one / "drift" / "drift.csv")
        if len(two) != len(single) or two[0] != single[0]:
            return f"drift.csv: {len(two)} rows on 2 ranks, {len(single)} on one"
        numbers = lambda table: np.array([[float(x) for x in row[1:]] for row in table[1:]])
        if not np.allclose(numbers(two), numbers(single), rtol=1e-5, atol=1e-6):
            return "drift.csv differs from the single process's"
        return None


HOLD_LOCK = """
import sys, time, filelock
lock = filelock.FileLock(sys.argv[1], timeout=0)  # kept referenced: a collected lock is released
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""

KILL_AT = """
import importlib, os, signal, sys
module, function, nth, signame = sys.argv[1:5]
target, calls = importlib.import_module(module), []
original = getattr(target, function)
def hooked(*args, **kwargs):
    result = original(*args, **kwargs)
    calls.append(1)
    if len(calls) == int(nth) and signame.startswith("FIFO:"):  # the file becomes a FIFO nobody writes
        os.replace(signame[5:], signame[5:] + ".aside")
        os.mkfifo(signame[5:])
    elif len(calls) == int(nth):
        os.kill(os.getpid(), getattr(signal, signame))
    return result
setattr(target, function, hooked)
from minigpt_geom.cli import main
sys.exit(main(sys.argv[5:]))
"""


def same_outputs(reference: Path, folder: Path) -> str | None:
    """None when every output file of the reference run is in folder with the same bytes: the tensors of each
    .safetensors (the checkpoint folder's weights and optimiser state too) one by one, log.csv by its steps."""
    import numpy as np
    from safetensors.numpy import load_file

    for path in sorted(reference.rglob("*")):
        relative = path.relative_to(reference)
        if path.is_dir() or relative.name.endswith(".lock") or "model/" in str(relative):  # model/: the user's
            continue
        other = folder / relative
        if not other.exists():
            return f"{relative} is missing after the resume"
        if path.suffix == ".safetensors":
            a, b = load_file(path), load_file(other)
            if a.keys() != b.keys():
                return f"{relative}: other tensors"
            if unequal := [k for k in a if not np.array_equal(a[k], b[k])]:
                return f"{relative}: {unequal[0]} differs from the uninterrupted run's"
        elif path.name == "log.csv":
            steps = lambda p: [line.split(",")[0] for line in p.read_text().splitlines()]
            if steps(path) != steps(other):
                return f"log.csv has steps {steps(other)}, not {steps(path)}"
        elif path.name in ("train.bin", "val.bin", "sigma.csv") and path.read_bytes() != other.read_bytes():
            return f"{relative} differs from the uninterrupted run's"
    ours = {str(p.relative_to(reference)) for p in reference.rglob("*")}
    extra = [str(p.relative_to(folder)) for p in folder.rglob("*") if str(p.relative_to(folder)) not in ours
             and not p.name.endswith(".lock")]
    return f"left behind: {', '.join(extra[:3])}" if extra else None


# ---- ranks ----------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(env: dict, rank: int, port: int) -> dict:
    """What torchrun gives each of 2 processes on one machine."""
    return {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def start_ranks(runner: Runner, attack: Attack, folder: Path) -> list[tuple[subprocess.Popen, Path]]:
    """Both ranks, each with its own extra words, logs folder.rank0.err, folder.rank1.err."""
    port, started = free_port(), []
    for rank, extra in enumerate(attack.ranks or ((), ())):
        log = folder.with_name(f"{folder.name}_rank{rank}")
        env = rank_env(environment(runner.fixtures, attack.env), rank, port)
        argv = substitute([*attack.argv, *extra], runner.fixtures, folder)
        started.append((spawn(argv, folder, env, log), log))
    return started




# ---- fixtures, the table, the command line ----------------------------------------------------------------------

def build_fixtures(root: Path, needed: set[str]) -> dict:
    """Corpus C (3 stdlib files as .txt), tokenizer TOK (300 ids), model W (init), token files T, T2 (another
    corpus), a finished run R (6 steps), a run stopped at step 4 R4, and a second tokenizer TOK2."""
    fixtures = {"root": root}
    corpus = root / "C"
    corpus.mkdir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in STDLIB:
        shutil.copyfile(stdlib / name, corpus / name.replace(".py", ".txt"))
    fixtures["C"] = corpus
    other = root / "C2"
    shutil.copytree(corpus, other)
    shutil.copyfile(stdlib / "glob.py", other / "glob.txt")
    fixtures.update(C2=other, TOK=root / "TOK", TOK2=root / "TOK2", W=root / "W", T=root / "T", T2=root / "T2",
                    R=root / "R", R4=root / "R4")
    env, logs = environment(fixtures), root / "logs"
    logs.mkdir()

    def cli(*argv: str) -> None:
        log = logs / argv[0]
        child = finish(spawn(substitute(list(argv), fixtures, root), root, env, log), log, 300)
        if child.code != 0:
            raise SystemExit(f"fixture {' '.join(argv[:2])} failed: {child.err[-500:]}")

    cli("tokenizer", "<C>", "-o", "<TOK>", "--vocab-size", "300", "--pattern", "*.txt", "--quiet")
    steps = [("init", "-o", "<W>", "--tokenizer", "<TOK>", *SHAPE), (*PREPARE, "-o", "<T>"),
             ("tokenizer", "<C2>", "-o", "<TOK2>", "--vocab-size", "290", "--pattern", "*.txt", "--quiet")]
    if needed & {"kills"}:
        steps.append(("prepare", "<C2>", "--tokenizer", "<TOK>", "--quiet", "-o", "<T2>"))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda argv: cli(*argv), steps))
    later = [(*TRAIN, "-o", "<R>")]
    if needed & {"kills"}:
        later.append((*TRAIN, "-o", "<R4>", "--stop-at", "4"))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda argv: cli(*argv), later))
    return fixtures


def mount_works(root: Path) -> bool:
    """Whether this process may mount a tmpfs (root, with CAP_SYS_ADMIN)."""
    probe = root / "mount-probe"
    probe.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True,
                      check=False).returncode != 0:
        return False
    subprocess.run(["umount", str(probe)], check=False)
    return True


def every_attack() -> list[Attack]:
    attacks = [*crafted_attacks(), *kill_attacks(), *disk_attacks(), *paths_attacks(), *sizes_attacks(),
               *torchrun_attacks()]
    names = [a.name for a in attacks]
    assert len(names) == len(set(names)), "two attacks share a name"
    return attacks


def summary(results: list[tuple[Attack, bool, str]], seconds: float) -> dict:
    """Per class: tried, handled, and each attack left with why."""
    classes = {}
    for kind in CLASSES:
        mine = [(a, ok, why) for a, ok, why in results if a.kind == kind]
        if mine:
            classes[kind] = {"tried": len(mine), "handled": sum(ok for _, ok, _ in mine),
                             "left": [{"name": a.name, "reason": why} for a, ok, why in mine if not ok]}
    return {"classes": classes, "tried": len(results), "handled": sum(ok for _, ok, _ in results),
            "left": sum(not ok for _, ok, _ in results), "seconds": round(seconds, 1)}


def table(result: dict) -> str:
    lines = ["| class | tried | handled | left |", "| --- | --- | --- | --- |"]
    for kind, row in result["classes"].items():
        lines.append(f"| {kind} | {row['tried']} | {row['handled']} | {len(row['left'])} |")
    lines.append(f"| all | {result['tried']} | {result['handled']} | {result['left']} |")
    for kind, row in result["classes"].items():
        for left in row["left"]:
            lines.append(f"- left ({kind}) {left['name']}: {left['reason']}")
    lines.append(f"({result['seconds']} s)")
    return "\n".join(lines)


def write_json(path: Path, value: dict) -> None:
    """The summary as JSON, atomically (a temporary beside it, renamed)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
    os.chmod(name, 0o666 & ~os.umask(os.umask(0o022)))
    os.replace(name, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a sample of each class (one kill a command)")
    parser.add_argument("--only", choices=CLASSES, action="append", help="this class only (repeatable)")
    parser.add_argument("--name", action="append", help="only attacks whose name contains this text (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the summary here, as JSON")
    parser.add_argument("--workers", type=int, default=2, help="attacks run at once (default: 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args(argv)
    attacks = [a for a in every_attack() if (not args.only or a.kind in args.only) and (not args.quick or a.quick)
               and (args.name is None or any(n in a.name for n in args.name))]
    start = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="minigpt-attacks-"))
    try:
        fixtures = build_fixtures(root, {a.kind for a in attacks})
        runner = Runner(root, fixtures, os.geteuid() == 0 and mount_works(root))
        print(f"{len(attacks)} attacks, fixtures in {time.monotonic() - start:.0f} s", file=sys.stderr)
        order = sorted(attacks, key=lambda a: a.how not in ("kill", "lost-peer", "ranks-vs-one"))  # long ones first
        with ThreadPoolExecutor(args.workers) as pool:
            outcomes = dict(zip(order, pool.map(runner.run, order)))
        results = [(a, *outcomes[a]) for a in attacks]
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            subprocess.run(["umount", "-l", *map(str, root.rglob("disk"))], capture_output=True, check=False)
            shutil.rmtree(root, ignore_errors=True)
    result = summary(results, time.monotonic() - start)
    print(table(result))
    if args.json is not None:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
