"""`from_pretrained("gpt2")` resolves through huggingface_hub's real cache, and through the weights/ drop-in."""

from __future__ import annotations

import shutil
import subprocess
import sys

import torch

from minigpt_geom import GPT2

LOAD_AND_PRINT = """
import torch, sys
from minigpt_geom import GPT2
from minigpt_geom.hub import resolve_file
print(resolve_file("gpt2", "model.safetensors"))
model = GPT2.from_pretrained("gpt2")
idx = torch.arange(20).view(2, 10)
torch.save(model(idx).detach(), sys.argv[1])
"""


def fake_hub_cache(hf_home, files) -> None:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/<file>, blobs/}."""
    repo = hf_home / "hub" / "models--openai-community--gpt2"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in files:
        shutil.copy(f, snapshot / f.name)


def run_in_fresh_process(env, tmp_path):
    out = tmp_path / "logits.pt"
    result = subprocess.run([sys.executable, "-c", LOAD_AND_PRINT, str(out)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), torch.load(out, weights_only=True)


def test_preset_loads_from_hub_cache_offline(small_checkpoints, clean_env, tmp_path):
    folder = small_checkpoints["official"]
    fake_hub_cache(tmp_path / "hf_home", [folder / "model.safetensors", folder / "config.json"])
    resolved, logits = run_in_fresh_process(clean_env, tmp_path)
    assert "models--openai-community--gpt2/snapshots/" in resolved
    expected = GPT2.from_pretrained(folder)(torch.arange(20).view(2, 10))
    assert torch.equal(logits, expected)


def test_preset_prefers_weights_drop_in(small_checkpoints, clean_env, tmp_path):
    drop_in = tmp_path / "weights" / "gpt2"  # clean_env's working directory is tmp_path
    shutil.copytree(small_checkpoints["transformers"], drop_in)
    resolved, logits = run_in_fresh_process(clean_env, tmp_path)
    assert resolved == str(drop_in / "model.safetensors")
    expected = GPT2.from_pretrained(small_checkpoints["transformers"])(torch.arange(20).view(2, 10))
    assert torch.equal(logits, expected)
