"""Hostile checkpoints and configs: each is refused with a one-line error of our own, fast and in little memory.

For files that break the safetensors format, the `safetensors` library is the oracle: it must refuse the file
too. Every case is loaded in its own forked child of one runner process (torch is imported once), so that the
child's peak RSS, from wait4, is the case's own; a memory bomb that got through would show there (and is
capped by RLIMIT_AS so that it cannot take the machine)."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from minigpt_geom import GPT2Config

PEAK_RSS_LIMIT_MB = 300
BOMB_SECONDS = 1.0

RUNNER = r"""
import json, os, resource, signal, sys, time
import torch
from minigpt_geom import GPT2

def load(case):
    start = time.perf_counter()
    try:
        GPT2.from_pretrained(case["source"], dtype=getattr(torch, case["dtype"]))
        outcome = {"error": None, "message": ""}
    except Exception as error:  # every outcome is reported; the test judges it
        outcome = {"error": type(error).__name__, "message": str(error)}
    outcome["seconds"] = time.perf_counter() - start
    return outcome

def in_child(case):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        signal.alarm(60)  # a runaway case dies instead of hanging the suite
        address_space = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (address_space + 2**30, resource.getrlimit(resource.RLIMIT_AS)[1]))
        with os.fdopen(write_end, "w") as out:
            out.write(json.dumps(load(case)))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = pipe.read()
    _, status, usage = os.wait4(pid, 0)
    outcome = json.loads(report) if report else {"error": f"child died (wait status {status})", "message": ""}
    outcome["peak_mb"] = usage.ru_maxrss / 1024  # KiB on Linux: this child's own high-water mark
    return outcome

cases = json.load(open(sys.argv[1]))
print(json.dumps({case["name"]: in_child(case) for case in cases}))
"""


# ---- crafting files ---------------------------------------------------------------------------------------

def split_file(path: Path) -> tuple[dict, bytes]:
    """(header, data section) of a safetensors file: 8-byte little-endian length, JSON header, raw bytes."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def join_file(header: dict | bytes, data: bytes) -> bytes:
    """A safetensors file from a header (a dict, or raw JSON bytes) and a data section, checked by no one."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def edited(header: dict, name: str, **changes) -> dict:
    """A copy of header with some fields of tensor `name` replaced."""
    return {**header, name: {**header[name], **changes}}


def negative_offsets(h: dict, d: bytes) -> bytes:
    begin, end = h["ln_f.bias"]["data_offsets"]
    return join_file(edited(h, "ln_f.bias", data_offsets=[begin - 10_000, end]), d)  # would reach into the header


def aliased_tensors(h: dict, d: bytes) -> bytes:
    return join_file(edited(h, "ln_f.bias", data_offsets=h["ln_f.weight"]["data_offsets"]), d)


def duplicate_keys(h: dict, d: bytes) -> bytes:
    text = json.dumps(h)[:-1] + ', "ln_f.bias": ' + json.dumps(h["ln_f.weight"]) + "}"  # same key, other bytes
    return join_file(text.encode(), d)


def utf16_header(h: dict, d: bytes) -> bytes:
    return join_file(json.dumps(h).encode("utf-16"), d)


def metadata_not_strings(h: dict, d: bytes) -> bytes:
    return join_file({**h, "__metadata__": {"format": 1}}, d)


def unknown_mask_dtype(h: dict, d: bytes) -> bytes:
    return join_file(edited(h, "h.0.attn.bias", dtype="F128"), d)


def trailing_bytes(h: dict, d: bytes) -> bytes:
    return join_file(h, d + b"\0" * 8)


def shape(value: list) -> Callable[[dict, bytes], bytes]:
    """ln_f.bias with the shape `value` (strings, floats, 2**70)."""
    return lambda h, d: join_file(edited(h, "ln_f.bias", shape=value), d)


def float_offsets(h: dict, d: bytes) -> bytes:
    return join_file(edited(h, "ln_f.bias", data_offsets=[float(x) for x in h["ln_f.bias"]["data_offsets"]]), d)


def deeply_nested(h: dict, d: bytes) -> bytes:
    text = json.dumps(h)[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    return join_file(text.encode(), d)


def huge_header_length(h: dict, d: bytes) -> bytes:
    return struct.pack("<Q", 2**62) + json.dumps(h).encode() + d


FORMAT_VIOLATIONS = {  # name -> (official small checkpoint's header, data) -> file bytes
    "negative_offsets": negative_offsets,
    "aliased_tensors": aliased_tensors,
    "duplicate_keys": duplicate_keys,
    "utf16_header": utf16_header,
    "metadata_not_strings": metadata_not_strings,
    "unknown_mask_dtype": unknown_mask_dtype,
    "trailing_bytes": trailing_bytes,
    "shape_strings": shape(["48"]),
    "shape_floats": shape([48.0]),
    "shape_2_70": shape([2**70]),
    "float_offsets": float_offsets,
    "nested_100000_deep": deeply_nested,
    "header_length_2_62": huge_header_length,
    "two_bytes": lambda h, d: b"\x05\x00",
    "truncated": lambda h, d: join_file(h, d[:-1000]),
}


def tiny_bomb(layer: str) -> dict[str, torch.Tensor]:
    """A few bytes of embeddings and one tensor in block `layer`: the old loader built that many blocks first."""
    return {"wte.weight": torch.zeros(1, 1), "wpe.weight": torch.zeros(1, 1), f"h.{layer}.ln_1.weight": torch.zeros(1)}


def changed(updates: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """The small checkpoint's tensors with some replaced or added: updates(tensors) -> {name: tensor}."""
    return lambda tensors: {**tensors, **updates(tensors)}


SEMANTIC = {  # name -> (small checkpoint's tensors) -> tensors a valid safetensors file holds; expected message
    "layer_bomb_20000": (lambda t: tiny_bomb("20000"), r"'h\.20000\.ln_1\.weight' is in layer 20000, beyond the 1000"),
    "layer_bomb_1e9": (lambda t: tiny_bomb("1000000000"), r"'h\.1000000000\.ln_1\.weight' is in layer 1000000000"),
    "layer_bomb_5000_digits": (lambda t: tiny_bomb("9" * 5000), r"'h\.9{38}' is in layer 9{12}…, beyond the 1000"),
    "header_of_100000_tensors": (lambda t: {f"t{i}": torch.zeros(1) for i in range(100_000)},
                                 r"model\.safetensors has a \d+ MiB header; a GPT-2's is under 4 MiB$"),
    "wte_1d": (changed(lambda t: {"wte.weight": t["wte.weight"].flatten()}),
               r"'wte\.weight' has shape \[14400\], expected \[rows, n_embd\]"),
    "empty_lm_head": (changed(lambda t: {"lm_head.weight": torch.zeros(0)}),
                      r"'lm_head\.weight' has shape \[0\], expected \[300, 48\]"),
    "integer_weights": (changed(lambda t: {"ln_f.bias": t["ln_f.bias"].to(torch.int32)}),
                        r"'ln_f\.bias' has dtype I32, expected one of"),
    "both_layouts": (changed(lambda t: {"transformer.wte.weight": t["wte.weight"].clone()}),
                     r"'wte\.weight' appears twice"),
    "stray_layer_index": (changed(lambda t: {"h.07.ln_1.weight": torch.zeros(48)}),
                          r"fit GPT-2 \(.*\): unexpected 1 tensor\(s\): h\.07\.ln_1\.weight$"),
}

CONFIGS = {  # name -> config.json bytes beside the valid small model.safetensors; expected message
    "config_not_utf8": (b'{"n_head": 4, "x": "\xff"}', r"config\.json is not UTF-8 text"),
    "config_a_list": (b"[4, 48]", r"config\.json holds a JSON list, expected an object"),
    "n_head_string": (b'{"n_head": "4"}', r"n_head must be an integer, got '4' \(str\)"),
    "n_head_float": (b'{"n_head": 4.0}', r"n_head must be an integer, got 4\.0 \(float\)"),
    "n_head_bool": (b'{"n_head": true}', r"n_head must be an integer, got True \(bool\)"),
    "n_head_not_dividing": (b'{"n_head": 5}', r"config\.json: n_head \(5\) does not divide n_embd \(48, the width of wte\.weight\)$"),
    "eps_negative": (b'{"n_head": 4, "layer_norm_epsilon": -1e-5}', r"layer_norm_epsilon must be finite and > 0"),
    "eps_nan": (b'{"n_head": 4, "layer_norm_epsilon": NaN}', r"layer_norm_epsilon must be finite .* got nan"),
    "eps_infinite": (b'{"n_head": 4, "layer_norm_epsilon": Infinity}', r"layer_norm_epsilon must be finite"),
    "eps_string": (b'{"n_head": 4, "layer_norm_epsilon": "1e-5"}', r"layer_norm_epsilon must be a number"),
    "n_layer_disagrees": (b'{"n_head": 4, "n_layer": 3}', r"gives n_layer = 3, but the tensors give 2"),
    "n_layer_string": (b'{"n_head": 4, "n_layer": "2"}', r"gives n_layer = '2', but the tensors give 2"),
    "n_head_5000_digits": (b'{"n_head": ' + b"4" * 5000 + b"}", r"config\.json is not valid JSON: Exceeds the limit"),
    "config_nested": (b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", r"config\.json is not valid JSON"),
    "config_too_large": (b'{"x": "' + b"a" * 2**21 + b'"}',
                         r"config_too_large/config\.json is more than 1,048,576 bytes, the most this reader accepts$"),
    "config_is_a_directory": ("DIRECTORY", r"config\.json is a directory, not a regular file$"),
    "config_is_a_fifo": ("FIFO", r"config\.json is a FIFO \(named pipe\), not a regular file$"),
    "config_is_dev_zero": ("/dev/zero", r"config\.json is a character device, not a regular file$"),
    # every GPT-2 field that changes the computation: read, or refused unless it has the value implemented here
    "scale_attn_weights_false": (b'{"n_head": 4, "scale_attn_weights": false}',
                                 r"scale_attn_weights = false is not implemented here \(only true\)$"),
    "scale_attn_by_inverse_layer_idx": (b'{"n_head": 4, "scale_attn_by_inverse_layer_idx": true}',
                                        r"scale_attn_by_inverse_layer_idx = true is not implemented here"),
    "reorder_and_upcast_attn": (b'{"n_head": 4, "reorder_and_upcast_attn": true}',
                                r"reorder_and_upcast_attn = true is not implemented here"),
    "add_cross_attention": (b'{"n_head": 4, "add_cross_attention": true}', r"add_cross_attention = true is not impl"),
    "tied_as_a_string": (b'{"n_head": 4, "tie_word_embeddings": "no"}',
                         r'tie_word_embeddings = "no" is not implemented here \(only true or false\)$'),
    # untied: the unembedding must then be in the file (lm_head.weight, as a fold saves it)
    "untied_embeddings": (b'{"n_head": 4, "tie_word_embeddings": false}', r"missing 1 tensor\(s\): lm_head\.weight"),
    "n_inner_other": (b'{"n_head": 4, "n_inner": 100}',
                      r"n_inner = 100 is not implemented here \(only null or 192\)$"),
    "model_type_other": (b'{"n_head": 4, "model_type": "gpt_neo"}', r'model_type = "gpt_neo" is not implemented'),
    "activation_relu": (b'{"n_head": 4, "activation_function": "relu"}',
                        r'activation_function = "relu" is not implemented here \(only "gelu_new" or'),
}
ACCEPTED_CONFIGS = {  # fields that change nothing a forward pass computes, and the implemented values, spelled out
    "config_every_field": json.dumps({
        "n_head": 4, "n_inner": None, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "add_cross_attention": False, "tie_word_embeddings": True,
        "model_type": "gpt2", "activation_function": "gelu_pytorch_tanh", "resid_pdrop": 0.1, "embd_pdrop": 0.1,
        "attn_pdrop": 0.1, "initializer_range": 0.02, "use_cache": True, "bos_token_id": 50256,
        "summary_type": "cls_index", "summary_use_proj": True, "architectures": ["GPT2LMHeadModel"]}).encode(),
    "config_n_inner_4d": b'{"n_head": 4, "n_inner": 192}',
}


def write_cases(root: Path, base: Path) -> list[dict]:
    """Write every hostile case under root; return [{name, source, dtype}] for the runner."""
    header, data = split_file(base / "model.safetensors")
    tensors = load_file(str(base / "model.safetensors"))
    cases = []

    def case(name: str, dtype: str = "float32") -> Path:
        (root / name).mkdir()
        cases.append({"name": name, "source": str(root / name), "dtype": dtype})
        return root / name

    for name, craft in FORMAT_VIOLATIONS.items():
        (case(name) / "model.safetensors").write_bytes(craft(header, data))
    for name, (build, _) in SEMANTIC.items():
        save_file(build(tensors), str(case(name) / "model.safetensors"))
    for name, (text, _) in {**CONFIGS, **{name: (text, "") for name, text in ACCEPTED_CONFIGS.items()}}.items():
        folder = case(name)
        shutil.copy(base / "model.safetensors", folder)
        config = folder / "config.json"
        if text == "DIRECTORY":
            config.mkdir()
        elif text == "FIFO":
            os.mkfifo(config)  # no writer ever comes: a reader that opens it blocks until the runner's alarm
        elif text == "/dev/zero":
            config.symlink_to(text)  # 0 bytes by st_size, endless to read
        else:
            config.write_bytes(text)
    big = dict(tensors, **{"h.1.mlp.c_fc.weight": tensors["h.1.mlp.c_fc.weight"] * 0 + 1e5})  # finite, > 65504
    for name, dtype in (("overflows_float16", "float16"), ("fits_float32", "float32")):
        save_file(big, str(case(name, dtype) / "model.safetensors"))
    shutil.copy(base / "model.safetensors", case("valid"))
    cases.append({"name": "symlink_loop_file", "source": str(root / "loop.safetensors"), "dtype": "float32"})
    (root / "loop.safetensors").symlink_to(root / "loop.safetensors")
    return cases


@pytest.fixture(scope="module")
def outcomes(tiny_checkpoint, tmp_path_factory) -> dict[str, dict]:
    """Every case loaded once, each in its own forked child: {name: {error, message, seconds, peak_mb}}."""
    root = tmp_path_factory.mktemp("hostile")
    cases = write_cases(root, tiny_checkpoint)
    (root / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", RUNNER, str(root / "cases.json")], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\n{'case':28s} {'seconds':>8s} {'peak RSS MB':>12s}  outcome")
    for name, r in report.items():
        print(f"{name:28s} {r['seconds'] if 'seconds' in r else float('nan'):8.3f} {r['peak_mb']:12.0f}  "
              f"{r['error']}: {r['message'][:120]}")
    return report


def assert_refused(outcome: dict, pattern: str, error: str = "CheckpointError") -> None:
    assert outcome["error"] == error, outcome
    assert "\n" not in outcome["message"], outcome
    assert outcome["message"].count(f"{os.sep}hostile") == 1, outcome  # names its file once: not an error wrapped twice
    assert re.search(pattern, outcome["message"]), outcome


# ---- the tests --------------------------------------------------------------------------------------------

@pytest.mark.subprocess
@pytest.mark.parametrize("name", FORMAT_VIOLATIONS)
def test_format_violation_is_refused_by_the_library_and_by_us(name, outcomes, tmp_path_factory, tiny_checkpoint):
    header, data = split_file(tiny_checkpoint / "model.safetensors")
    path = tmp_path_factory.mktemp("oracle") / "model.safetensors"
    path.write_bytes(FORMAT_VIOLATIONS[name](header, data))
    with pytest.raises(SafetensorError):
        safe_open(str(path), framework="pt")
    pattern = r"is truncated or has bytes no tensor owns" if name in ("trailing_bytes", "truncated") else (
        r"model\.safetensors is not a safetensors file \(")
    assert_refused(outcomes[name], pattern)


@pytest.mark.subprocess
@pytest.mark.parametrize("name", SEMANTIC)
def test_valid_file_of_the_wrong_shape_is_refused_before_building(name, outcomes):
    assert_refused(outcomes[name], SEMANTIC[name][1])


@pytest.mark.subprocess
def test_layer_index_bombs_fail_in_under_a_second(outcomes):
    for name in ("layer_bomb_20000", "layer_bomb_1e9", "layer_bomb_5000_digits"):
        assert outcomes[name]["seconds"] < BOMB_SECONDS, outcomes[name]


@pytest.mark.subprocess
@pytest.mark.parametrize("name", CONFIGS)
def test_bad_config_json_is_refused(name, outcomes):
    assert_refused(outcomes[name], CONFIGS[name][1])


@pytest.mark.subprocess
@pytest.mark.parametrize("name", ACCEPTED_CONFIGS)
def test_fields_that_change_nothing_and_implemented_values_are_accepted(name, outcomes):
    assert outcomes[name]["error"] is None, outcomes[name]


@pytest.mark.subprocess
def test_float16_overflow_is_blamed_on_the_cast_not_the_file(outcomes):
    assert_refused(outcomes["overflows_float16"], r"'h\.1\.mlp\.c_fc\.weight' holds finite values up to 1e\+05, "
                                                  r"beyond float16's largest \(65504\): the cast to float16 overflows")
    assert outcomes["fits_float32"]["error"] is None, outcomes["fits_float32"]


@pytest.mark.subprocess
def test_symlink_loop_is_refused(outcomes):
    assert_refused(outcomes["symlink_loop_file"], r"loop\.safetensors is not a regular file")


@pytest.mark.subprocess
def test_every_case_stays_small(outcomes):
    assert outcomes["valid"]["error"] is None, outcomes["valid"]
    heavy = {name: r["peak_mb"] for name, r in outcomes.items() if r["peak_mb"] >= PEAK_RSS_LIMIT_MB}
    assert not heavy, heavy


@pytest.mark.parametrize("fields, message", [
    (dict(n_layer=True), r"GPT2Config\.n_layer must be an integer, got True \(bool\)"),
    (dict(n_head=4.0, n_embd=48), r"GPT2Config\.n_head must be an integer, got 4\.0"),
    (dict(n_layer=1001), r"GPT2Config\.n_layer must be between 1 and 1000, got 1001"),
    (dict(vocab_size=0), r"GPT2Config\.vocab_size must be between 1 and"),
    (dict(ln_eps=float("nan")), r"GPT2Config\.ln_eps must be finite and > 0, got nan"),
    (dict(ln_eps=0.0), r"GPT2Config\.ln_eps must be finite"),
    (dict(ln_eps="1e-5"), r"GPT2Config\.ln_eps must be a number"),
    (dict(n_head=5), r"n_embd \(768\) must be divisible by n_head \(5\)"),
])
def test_config_fields_have_exact_types_and_plausible_bounds(fields, message):
    with pytest.raises((TypeError, ValueError), match=message):
        GPT2Config(**fields)
