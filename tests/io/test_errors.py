"""Bad input gives a clear error of this package's own types, naming the problem."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from minigpt_geom import GPT2, CheckpointError, InputError, WeightsNotFoundError


@pytest.fixture
def checkpoint_copy(tiny_checkpoint, tmp_path):
    """A writable copy of the small official-layout checkpoint."""
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    return folder


def rewrite(folder, edit) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def test_unknown_preset(clean_env):
    with pytest.raises(WeightsNotFoundError, match=r"'gpt3' is neither .* a preset \(gpt2, gpt2-medium"):
        GPT2.from_pretrained("gpt3")


def test_missing_file_and_directory_without_weights(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        GPT2.from_pretrained(tmp_path / "absent.safetensors")
    with pytest.raises(WeightsNotFoundError, match="model.safetensors not found in directory"):
        GPT2.from_pretrained(tmp_path)


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="never loaded"):
        GPT2.from_pretrained(path)


@pytest.mark.subprocess
def test_offline_and_not_cached_says_what_to_do(clean_env):
    # A fresh process: huggingface_hub reads HF_HUB_OFFLINE when it is imported.
    result = subprocess.run([sys.executable, "-m", "minigpt_geom", "verify", "--weights", "gpt2"], env=clean_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("minigpt-geom verify: error: could not get model.safetensors")
    assert "HF_HUB_OFFLINE is set" in result.stderr and "put it in weights/gpt2/" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # every place looked in: the unset variable, both weights/ folders, the cache
    assert "$MINIGPT_GEOM_WEIGHTS/gpt2 (the variable is not set)" in result.stderr
    assert f"{Path.cwd() / 'weights' / 'gpt2'}" in result.stderr and "hf_home" in result.stderr
    env = {**clean_env, "MINIGPT_GEOM_WEIGHTS": str(Path.cwd() / "elsewhere")}
    result = subprocess.run([sys.executable, "-m", "minigpt_geom", "lens", "--weights", "gpt2", "--no-plot"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and f"{Path.cwd() / 'elsewhere' / 'gpt2'}, " in result.stderr


def test_missing_tensor_is_named(checkpoint_copy):
    rewrite(checkpoint_copy, lambda t: t.pop("h.1.mlp.c_fc.bias"))
    with pytest.raises(CheckpointError, match=r"missing 1 tensor\(s\): h\.1\.mlp\.c_fc\.bias"):
        GPT2.from_pretrained(checkpoint_copy)


def test_unexpected_tensor_is_named(checkpoint_copy):
    rewrite(checkpoint_copy, lambda t: t.update({"h.0.attn.rotary.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"unexpected 1 tensor\(s\): h\.0\.attn\.rotary\.weight"):
        GPT2.from_pretrained(checkpoint_copy)


def test_wrong_shape_names_tensor_expected_and_got(checkpoint_copy):
    rewrite(checkpoint_copy, lambda t: t.update({"h.0.attn.c_proj.weight": torch.zeros(48, 47)}))
    with pytest.raises(CheckpointError, match=r"'h\.0\.attn\.c_proj\.weight' has shape \[48, 47\], expected \[48, 48\]"):
        GPT2.from_pretrained(checkpoint_copy)


def test_truncated_file(checkpoint_copy):
    path = checkpoint_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="is truncated"):
        GPT2.from_pretrained(checkpoint_copy)
    path.write_bytes(b"\x05\x00")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        GPT2.from_pretrained(checkpoint_copy)


def test_non_finite_weights(checkpoint_copy):
    def poison(t):
        t["h.1.ln_2.weight"][3] = float("nan")
    rewrite(checkpoint_copy, poison)
    with pytest.raises(CheckpointError, match=r"'h\.1\.ln_2\.weight' contains NaN"):
        GPT2.from_pretrained(checkpoint_copy)


def test_untied_lm_head_is_refused(small_hf, tmp_path):
    tensors = {k: v.contiguous() for k, v in small_hf.state_dict().items()}
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"] + 1
    save_file(tensors, str(tmp_path / "model.safetensors"))
    small_hf.config.to_json_file(str(tmp_path / "config.json"))
    with pytest.raises(CheckpointError, match="lm_head.weight differs from wte.weight"):
        GPT2.from_pretrained(tmp_path)


def test_unsupported_config(checkpoint_copy):
    config = json.loads((checkpoint_copy / "config.json").read_text())
    config["activation_function"] = "relu"
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match='activation_function = "relu" is not implemented here'):
        GPT2.from_pretrained(checkpoint_copy)


# ---- inputs that are not regular files ------------------------------------------------------------------------

@contextmanager
def deadline(seconds: float):
    """A TimeoutError instead of a hang: a blocking open() of a FIFO or an endless read is interrupted."""
    def expire(signum, frame):
        raise TimeoutError(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
@pytest.mark.parametrize("name", ["config.json", "vocab.json", "merges.txt"])
def test_a_fifo_or_dev_zero_among_the_files_is_refused_at_once(checkpoint_copy, tiny_checkpoint, name, kind):
    """No input can hang a load (a FIFO with no writer) or fill memory (/dev/zero reports 0 bytes)."""
    from minigpt_geom.text.tokenizer import Tokenizer

    folder = checkpoint_copy if name == "config.json" else \
        shutil.copytree(tiny_checkpoint, checkpoint_copy.parent / "tokenizer")
    (folder / name).unlink()
    fifo(folder / name) if kind == "fifo" else (folder / name).symlink_to("/dev/zero")
    load = GPT2.from_pretrained if name == "config.json" else Tokenizer.from_pretrained
    described = "a FIFO" if kind == "fifo" else "a character device"
    with deadline(20), pytest.raises(CheckpointError, match=f"{name} is {described}.*, not a regular file$"):
        load(folder)


def test_trace_files_and_the_file_reader_refuse_what_is_not_a_regular_file(tmp_path):
    from minigpt_geom import Trace
    from minigpt_geom.io.files import read_bytes, read_text

    with deadline(20):
        with pytest.raises(InputError, match="is a FIFO"):
            Trace.load(fifo(tmp_path / "trace.npz"))
        (tmp_path / "zero.safetensors").symlink_to("/dev/zero")
        with pytest.raises(InputError, match="is a character device"):
            Trace.load(tmp_path / "zero.safetensors")
        with pytest.raises(InputError, match="/dev/zero is a character device"):
            read_bytes("/dev/zero", 100)
        with pytest.raises(InputError, match="is a directory"):
            read_text(tmp_path, 100)
    (tmp_path / "big.json").write_bytes(b"x" * 101)
    with pytest.raises(InputError, match="more than 100 bytes"):
        read_bytes(tmp_path / "big.json", 100)
    assert read_text(tmp_path / "big.json", 101) == "x" * 101
    with pytest.raises(FileNotFoundError):
        read_bytes(tmp_path / "absent", 100)


# ---- a full disk ------------------------------------------------------------------------------------------------

FILE_SIZE_LIMIT = """
import resource, signal, sys, torch
from safetensors.torch import save_file
from minigpt_geom import OutputError
from minigpt_geom.io.files import atomic_write
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as one on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    atomic_write(sys.argv[1], lambda temporary: save_file({"x": torch.zeros(10_000)}, str(temporary)))
except OutputError as error:
    print(error)
"""


@pytest.mark.slow
def test_a_failed_write_is_an_output_error_from_python_and_from_safetensors(tmp_path):
    """Writing to /dev/full fails with ENOSPC, as on a full disk; safetensors, stopped by a file size limit,
    raises its own error type. Either way: OutputError, and the previous file stays."""
    from minigpt_geom import OutputError
    from minigpt_geom.io.files import atomic_write

    target = tmp_path / "model.safetensors"
    target.write_bytes(b"the previous checkpoint")
    with pytest.raises(OutputError, match="No space left on device"):
        atomic_write(target, lambda temporary: Path("/dev/full").write_bytes(b"x" * 2**16))
    done = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(target)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"cannot write {target}: ") and "File too large" in done.stdout, done.stdout
    assert target.read_bytes() == b"the previous checkpoint" and os.listdir(tmp_path) == ["model.safetensors"]
