"""Bad input gives a clear error of this package's own types, naming the problem."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from minigpt_geom import GPT2, CheckpointError, InputError, WeightsNotFoundError


@pytest.fixture
def checkpoint_copy(small_checkpoints, tmp_path):
    """A writable copy of the small official-layout checkpoint."""
    folder = tmp_path / "ckpt"
    shutil.copytree(small_checkpoints["official"], folder)
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
    assert "HF_HUB_OFFLINE is set" in result.stderr and "put it at weights/gpt2/model.safetensors" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


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
    with pytest.raises(CheckpointError, match="activation 'relu'"):
        GPT2.from_pretrained(checkpoint_copy)


@pytest.fixture(scope="module")
def model(small_checkpoints):
    return GPT2.from_pretrained(small_checkpoints["official"])


@pytest.mark.parametrize(
    "idx, message",
    [
        (torch.tensor([[1, 2, 101]]), r"token id 101 is outside the vocabulary \[0, 101\)"),
        (torch.tensor([[1, -1, 3]]), r"token id -1 is outside the vocabulary"),
        (torch.zeros(1, 33, dtype=torch.long), "sequence of 33 tokens is longer than the context of 32"),
        (torch.tensor([1, 2, 3]), r"shape \[batch, time\], got \(3,\) \(use idx.unsqueeze\(0\)"),
        (torch.tensor([[1.0, 2.0]]), "int64 or int32 tensor, got dtype torch.float32"),
        (torch.zeros(1, 0, dtype=torch.long), "non-empty"),
        ([[1, 2]], "must be a torch.Tensor"),
    ],
)
def test_bad_token_input(model, idx, message):
    with pytest.raises(InputError, match=message):
        model(idx)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16])
def test_small_integer_token_ids_are_refused(model, dtype):
    # uint8 would index as a boolean mask, int8/int16 fail inside the embedding lookup
    with pytest.raises(InputError, match="int64 or int32"):
        model(torch.ones(1, 4, dtype=dtype))
