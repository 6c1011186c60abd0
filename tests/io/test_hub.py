"""`from_pretrained("gpt2")` resolves through huggingface_hub's real cache, and through the weights/ drop-in."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from minigpt_geom import GPT2

LOAD_AND_PRINT = """
import torch, sys
from minigpt_geom import GPT2
from minigpt_geom.io.hub import resolve_file
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


@pytest.mark.subprocess
def test_preset_loads_from_hub_cache_offline(tiny_checkpoint, clean_env, tmp_path):
    folder = tiny_checkpoint
    fake_hub_cache(tmp_path / "hf_home", [folder / "model.safetensors", folder / "config.json"])
    resolved, logits = run_in_fresh_process(clean_env, tmp_path)
    assert "models--openai-community--gpt2/snapshots/" in resolved
    expected = GPT2.from_pretrained(folder)(torch.arange(20).view(2, 10))
    assert torch.equal(logits, expected)


@pytest.mark.subprocess
def test_preset_prefers_weights_drop_in(small_checkpoints, clean_env, tmp_path):
    drop_in = tmp_path / "weights" / "gpt2"  # clean_env's working directory is tmp_path
    shutil.copytree(small_checkpoints["transformers"], drop_in)
    resolved, logits = run_in_fresh_process(clean_env, tmp_path)
    assert resolved == str(drop_in / "model.safetensors")
    expected = GPT2.from_pretrained(small_checkpoints["transformers"])(torch.arange(20).view(2, 10))
    assert torch.equal(logits, expected)


OFFLINE_CASES = """
import json, sys, time
from minigpt_geom import GPT2
from minigpt_geom.text.tokenizer import Tokenizer
outcomes = {}
for name, load, source in [(c[0], {"model": GPT2, "tokenizer": Tokenizer}[c[1]], c[2]) for c in json.loads(sys.argv[1])]:
    start = time.perf_counter()
    try:
        load.from_pretrained(source)
        outcomes[name] = {"error": None, "message": ""}
    except Exception as error:
        outcomes[name] = {"error": type(error).__name__, "message": str(error)}
    outcomes[name]["seconds"] = time.perf_counter() - start
print(json.dumps(outcomes))
"""


class ConnectionCounter:
    """A TCP listener standing in for the hub: it counts the connections made to it and answers none."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.count = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:  # closed
                return
            self.count += 1
            connection.close()


def run_offline_cases(env, cases) -> dict:
    result = subprocess.run([sys.executable, "-c", OFFLINE_CASES, json.dumps(cases)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.subprocess
def test_local_folders_and_paths_never_reach_the_hub(tiny_checkpoint, clean_env, tmp_path):
    drop_in = tmp_path / "weights" / "gpt2"  # clean_env's working directory is tmp_path
    drop_in.mkdir(parents=True)
    shutil.copy(tiny_checkpoint / "model.safetensors", drop_in)  # no config.json, no tokenizer files
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    hub = ConnectionCounter()
    env = {k: v for k, v in clean_env.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{hub.port}"
    outcomes = run_offline_cases(env, [
        ("drop-in model", "model", "gpt2"),
        ("drop-in tokenizer", "tokenizer", "gpt2"),
        ("symlink loop", "model", "loop"),
        ("dot path", "model", "./org/name"),
        ("home path", "tokenizer", "~someone/model"),
        ("three parts", "model", "a/b/c"),
    ])
    hub.server.close()
    assert hub.count == 0, outcomes
    assert outcomes["drop-in model"]["error"] is None, outcomes  # n_head from the width, as for a bare file
    tokenizer = outcomes["drop-in tokenizer"]
    assert tokenizer["error"] == "WeightsNotFoundError"
    assert f"vocab.json and merges.txt not found in directory {drop_in}" in tokenizer["message"]
    assert "symlink loop" in outcomes["symlink loop"]["message"]
    for name in ("dot path", "home path", "three parts"):
        assert outcomes[name]["error"] == "WeightsNotFoundError", outcomes[name]
        assert "no such file or directory" in outcomes[name]["message"], outcomes[name]


@pytest.mark.subprocess
def test_no_network_is_reported_in_seconds_with_every_missing_file(clean_env):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: every connection is refused, as with no network
    env = {k: v for k, v in clean_env.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
    outcomes = run_offline_cases(env, [("model", "model", "gpt2"), ("tokenizer", "tokenizer", "gpt2")])
    for name, files in (("model", "model.safetensors"), ("tokenizer", "vocab.json and merges.txt")):
        outcome = outcomes[name]
        assert outcome["error"] == "WeightsNotFoundError", outcome
        assert outcome["message"].startswith(f"could not get {files} of openai-community/gpt2: the hub could not be "
                                             f"reached"), outcome
        assert "HF_HUB_OFFLINE=1" in outcome["message"] and "\n" not in outcome["message"]
        assert outcome["seconds"] < 10, outcome  # hf_hub_download alone retries for ~25 s


def test_hub_ids_and_paths(tmp_path):
    from minigpt_geom.io.hub import is_hub_id

    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert is_hub_id("openai-community/gpt2")
    for path_like in ("./a/b", "~a/b", "/a/b", "a/b/c", "a\\b", "a--b/c", str(tmp_path / "loop"), str(tmp_path)):
        assert not is_hub_id(path_like), path_like


def test_the_missing_weights_error_names_each_place_once(clean_env, monkeypatch):
    """Run from the repository's root, ./weights is the repository's weights/ folder: named once, not twice."""
    import minigpt_geom
    from minigpt_geom.io.hub import drop_in_dirs, places_looked

    repository = Path(minigpt_geom.__file__).resolve().parents[1]
    monkeypatch.chdir(repository)
    assert drop_in_dirs("gpt2") == [repository / "weights" / "gpt2"]
    looked = places_looked("gpt2")
    assert looked.count(str(repository / "weights" / "gpt2")) == 1 and looked.count("weights/gpt2") == 1
    monkeypatch.setenv("MINIGPT_GEOM_WEIGHTS", str(repository / "weights"))
    assert drop_in_dirs("gpt2") == [repository / "weights" / "gpt2"]
    monkeypatch.delenv("MINIGPT_GEOM_WEIGHTS")
    monkeypatch.chdir(clean_env["HF_HOME"].rsplit("/", 1)[0])
    assert drop_in_dirs("gpt2") == [Path.cwd() / "weights" / "gpt2", repository / "weights" / "gpt2"]  # elsewhere
