"""Issue 27, defect 7: every size a user can give is checked, before anything is allocated, against the memory
available (memory.available_bytes: MemAvailable, a cgroup's limit, ulimit -v), not the physical memory."""

from __future__ import annotations

import json
import resource
import shutil
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from launch import child_env

from minigpt_geom.cli import main
from minigpt_geom.memory import available_bytes

ROOT = Path(__file__).resolve().parent.parent
HUGE = str(10**12)  # windows or pairs whose index tensors alone need terabytes


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def train_argv(tokens, tokenizer, out, *extra) -> list[str]:
    return ["train", str(tokens), "-o", str(out), "--tokenizer", str(tokenizer), "--n-layer", "1", "--n-head", "2",
            "--n-embd", "32", "--n-ctx", "32", "--steps", "2", "--batch-size", "2", "--warmup", "0",
            "--eval-windows", "2", "--sample-tokens", "0", "--quiet", *extra]


@pytest.mark.parametrize("extra, what", [(["--eval-windows", HUGE], "an evaluation of 1,000,000,000,000 windows"),
                                         (["--batch-size", HUGE, "--micro-batch", "1"],
                                          "a batch of 1,000,000,000,000 windows")])
def test_defect_7_eval_windows_and_batch_bounded_by_available_memory(extra, what, tokens, tiny_checkpoint, tmp_path,
                                                                      capsys):
    out = tmp_path / "run"
    err = one_line_error(capsys, main(train_argv(tokens, tiny_checkpoint, out, *extra)))
    assert f"{what} needs about" in err and "GiB available" in err
    assert not out.exists()


def test_defect_7_a_saved_states_eval_windows_is_bounded_on_resume(tokens, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(tokens, tiny_checkpoint, out, "--stop-at", "1")) == 0
    state_path = out / "checkpoint" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    state["settings"]["eval_windows"] = 10**12
    state_path.write_text(json.dumps(state))
    err = one_line_error(capsys, main(["train", str(tokens), "-o", str(out), "--resume", "--quiet"]))
    assert "an evaluation of 1,000,000,000,000 windows needs about" in err


@pytest.fixture(scope="module")
def wide_vocabulary(tiny_checkpoint, tmp_path_factory) -> Path:
    """A one-layer model of GPT-2's 50257 words (d = 16) with the tests' tokenizer: V² = 2.5e9 query-key pairs."""
    from helpers import write_random_checkpoint

    folder = tmp_path_factory.mktemp("wide")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tiny_checkpoint / name, folder / name)
    write_random_checkpoint(folder, seed=5, n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=50257)
    return folder


def test_defect_7_qk_k_bounded_by_available_memory(wide_vocabulary, capsys):
    err = one_line_error(capsys, main(["qk", "--weights", str(wide_vocabulary), "-k", "2000000000", "--quiet"]))
    assert "-k 2000000000 with --chunk-size 512 needs about" in err
    assert main(["qk", "--weights", str(wide_vocabulary), "-k", "2000000000", "--vocab-limit", "300",
                 "--quiet"]) == 0  # 300 words have 90,000 pairs: k is that


def peak_bytes(read) -> int:
    """The most memory `read()` held at once, as tracemalloc sees Python's and NumPy's allocations."""
    tracemalloc.start()
    try:
        read()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_defect_7_vocab_from_files_are_read_in_bounded_memory(tiny_checkpoint, tmp_path):
    from minigpt_geom.analysis.vocabulary import text_counts
    from minigpt_geom.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(tiny_checkpoint)
    text = tmp_path / "big.txt"
    text.write_text("the cat sat on the mat. " * 500_000, encoding="utf-8")  # 12 MB, 3.5 million tokens
    counts = text_counts([text], tokenizer, tokenizer.n_vocab)
    assert counts.sum() == len(tokenizer.encode_ordinary(text.read_text()))  # the same ids as the whole text
    assert peak_bytes(lambda: text_counts([text], tokenizer, tokenizer.n_vocab)) < text.stat().st_size / 4


def test_defect_7_vocab_from_token_files_are_read_in_bounded_memory(tmp_path):
    from minigpt_geom.analysis.vocabulary import token_file_counts

    ids = tmp_path / "big.bin"
    np.random.default_rng(0).integers(0, 300, 8 * 2**20, dtype=np.uint16).tofile(ids)  # 16 MB of ids
    assert peak_bytes(lambda: token_file_counts(ids, 300)) < ids.stat().st_size / 2  # bincount widens to int64: 4x


def sparse_checkpoint(folder: Path, vocab: int, d: int) -> Path:
    """A valid one-layer GPT-2 safetensors file of vocab × d embeddings, written sparse: its header alone."""
    shapes = {"wte.weight": [vocab, d], "wpe.weight": [1, d], "ln_f.weight": [d], "ln_f.bias": [d],
              **{f"h.0.{name}": shape for name, shape in {
                  "ln_1.weight": [d], "ln_1.bias": [d], "attn.c_attn.weight": [d, 3 * d], "attn.c_attn.bias": [3 * d],
                  "attn.c_proj.weight": [d, d], "attn.c_proj.bias": [d], "ln_2.weight": [d], "ln_2.bias": [d],
                  "mlp.c_fc.weight": [d, 4 * d], "mlp.c_fc.bias": [4 * d], "mlp.c_proj.weight": [4 * d, d],
                  "mlp.c_proj.bias": [d]}.items()}}
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = folder / "model.safetensors"
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)  # a hole: no disk is used
    return path


def test_defect_7_a_sparse_checkpoint_larger_than_memory_is_refused_before_allocating(tiny_checkpoint, tmp_path,
                                                                                      capsys):
    folder = tmp_path / "sparse"
    folder.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tiny_checkpoint / name, folder / name)
    vocab = 2**21  # LIMITS' largest vocabulary: with d = 4096, 32 GiB of float32 embeddings
    path = sparse_checkpoint(folder, vocab, 4096)
    needed = path.stat().st_size
    available = available_bytes(torch.device("cpu"))
    if needed <= available:
        pytest.skip(f"this machine has {available / 2**30:.0f} GiB available: the 32 GiB file would fit")
    err = one_line_error(capsys, main(["lens", "--weights", str(folder), "--quiet", "--no-plot"]))
    assert f"the model of {path}" in err and "needs about 32.8 GiB" in err


@pytest.mark.subprocess
def test_defect_7_the_probe_is_what_ulimit_leaves_not_the_physical_memory(tiny_checkpoint, tmp_path):
    limit = 3 * 2**30  # ulimit -v 3 GiB: the torch process maps about 1.5 GiB of it already
    argv = [sys.executable, "-m", "minigpt_geom", "init", "-o", str(tmp_path / "m"), "--tokenizer",
            str(tiny_checkpoint), "--n-layer", "12", "--n-embd", "2048", "--n-head", "16"]  # 2.3 GiB of weights
    env = child_env()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "needs about" in result.stderr and "GiB available" in result.stderr  # the estimate, not the allocator
    assert not (tmp_path / "m").exists()
