"""Training: a tiny GPT-2 learns the standard library's source; checked with transformers, torch's own LR
schedulers, torchrun, and an uninterrupted run."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import load_hf, needs
from minigpt_geom import GPT2, GPT2Config
from minigpt_geom.cli import main
from minigpt_geom.text.token_files import load_tokens, windows
from minigpt_geom.model.pretrained import norm_spec
from minigpt_geom.text.tokenizer import Tokenizer
from minigpt_geom.training.loop import TrainSettings, learning_rate, load_corpus, make_optimizer, read_log, train
from tiny_training import FAST, STDLIB_FILES, run, tiny_model

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


# ---- data -----------------------------------------------------------------------------------------


def test_prepare_holds_out_whole_files_each_then_endoftext(corpus, tokens, tiny_checkpoint):
    tokenizer = Tokenizer.from_pretrained(tiny_checkpoint)
    per_file = [np.array(tokenizer.encode((corpus / name).read_text()) + [tokenizer.eot_token])
                for name in sorted(STDLIB_FILES)]  # each file is one document here (< 1 MiB)
    data = load_tokens(tokens)
    assert data.train.dtype == np.uint16
    held = [len(data.val) > 0 and any(np.array_equal(ids, data.val[k:k + len(ids)]) for k in range(len(data.val)))
            for ids in per_file]
    assert sum(held) == data.meta["val_documents"] >= 1
    np.testing.assert_array_equal(data.train, np.concatenate([ids for ids, h in zip(per_file, held) if not h]))
    np.testing.assert_array_equal(data.val, np.concatenate([ids for ids, h in zip(per_file, held) if h]))
    total = sum(map(len, per_file))
    assert 0 < len(data.val) <= 0.2 * total  # within twice --val-fraction
    assert data.meta["vocab_size"] == max(ids.max() for ids in per_file) + 1


def test_prepare_command_writes_the_same_token_files(corpus, tokens, tiny_checkpoint, tmp_path, capsys):
    assert main(["prepare", str(corpus), "-o", str(tmp_path), "--tokenizer", str(tiny_checkpoint),
                 "--pattern", "*.py"]) == 0
    assert f"{len(STDLIB_FILES)} files" in capsys.readouterr().out
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / name).read_bytes() == (tokens / name).read_bytes()


def test_windows_are_inputs_and_the_next_ids():
    ids = np.arange(100, dtype=np.uint16)
    x, y = windows(ids, torch.tensor([3, 50]), 8)
    assert x.dtype == torch.int64 and x.shape == (2, 8)
    assert x[1].tolist() == list(range(50, 58)) and y[1].tolist() == list(range(51, 59))


def test_corpus_cache_is_reused_until_a_file_changes(corpus, tiny_checkpoint, tmp_path):
    first = load_corpus(corpus, tiny_checkpoint, cache_dir=tmp_path, progress=False)
    folders = list(tmp_path.iterdir())
    stamp = (folders[0] / "meta.json").stat().st_mtime_ns
    load_corpus(corpus, tiny_checkpoint, cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == folders and (folders[0] / "meta.json").stat().st_mtime_ns == stamp
    changed = tmp_path / "changed"
    shutil.copytree(corpus, changed)
    (changed / "extra.txt").write_text("one more file")
    again = load_corpus(changed, tiny_checkpoint, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 3  # the copy's key differs from the original's
    assert len(again.train) + len(again.val) > len(first.train) + len(first.val)


# ---- initialisation and optimiser -------------------------------------------------------------------


def test_a_new_gpt2_is_initialised_as_transformers_gpt2_and_works():
    transformers = needs("transformers")
    config = GPT2Config(n_layer=4, n_head=4, n_embd=128, n_ctx=256, vocab_size=1000)
    ours = dict(GPT2(config, seed=1).named_parameters())
    torch.manual_seed(1)
    theirs = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=4, n_head=4, n_embd=128, n_positions=256, vocab_size=1000)).transformer
    for name, p in theirs.named_parameters():
        mine = ours[name].detach()
        if p.dim() == 2:  # N(0, 0.02²), c_proj N(0, (0.02/√(2L))²)
            assert math.isclose(mine.std().item(), p.std().item(), rel_tol=0.05), name
            assert abs(mine.mean().item()) < 3 * p.std().item() / math.sqrt(p.numel())
        else:
            assert torch.equal(mine, p.detach()), name  # biases 0, γ 1, β 0
    assert math.isclose(ours["h.0.attn.c_proj.weight"].std().item(), 0.02 / math.sqrt(8), rel_tol=0.05)
    with torch.no_grad():  # a working model as built: finite logits near the uniform distribution's
        logits = GPT2(config, norm="dyt")(torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.zeros(32, dtype=torch.long))
    assert abs(loss.item() - math.log(1000)) < 0.1


def test_learning_rate_is_warmup_then_cosine_as_torch_schedulers():
    settings = TrainSettings(steps=50, learning_rate=1e-3, min_learning_rate=1e-4, warmup_steps=10)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, end_factor=1.0, total_iters=9),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=40, eta_min=1e-4),
    ], milestones=[10])
    for step in range(50):
        assert math.isclose(learning_rate(step, settings), optimizer.param_groups[0]["lr"], rel_tol=1e-9), step
        optimizer.step()
        schedule.step()
    assert math.isclose(learning_rate(50, settings), 1e-4)


def test_weight_decay_applies_to_matrices_only():
    model = tiny_model("dyt")
    groups = make_optimizer(model, TrainSettings(weight_decay=0.1)).param_groups
    names = {id(p): name for name, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decayed == {name for name, p in model.named_parameters() if p.dim() == 2}
    assert "wte.weight" in decayed and "h.0.ln_1.alpha" in {names[id(p)] for p in groups[1]["params"]}


# ---- training ------------------------------------------------------------------------------------------


@pytest.mark.slow  # a training run
def test_training_lowers_validation_loss_and_transformers_reads_the_checkpoint(tokens, tiny_checkpoint, tmp_path):
    needs("transformers")
    model = tiny_model()
    log = run(model, tokens, tiny_checkpoint, tmp_path, steps=50, eval_interval=25)
    val = [row.val_loss for row in log if row.val_loss is not None]
    assert len(val) == 3 and val[-1] < val[0] - 1.0, val  # from ≈ ln 300 = 5.7 nats to below 4.7
    written = read_log(tmp_path / "log.csv")
    assert [row.step for row in written] == [row.step for row in log]
    for row, exact in zip(written, log):  # six significant digits
        assert row.learning_rate == pytest.approx(exact.learning_rate, rel=1e-5)
        assert row.train_loss == (exact.train_loss and pytest.approx(exact.train_loss, rel=1e-5))
    assert (tmp_path / "log.csv").read_text().splitlines()[0] == \
        "step,train_loss,val_loss,learning_rate,tokens_per_second,grad_norm,residual_norm,dyt_saturation"
    assert all((row.residual_norm is not None) == (row.val_loss is not None) for row in written)
    assert all(row.dyt_saturation is None for row in written)  # a layer-norm model has no DyT site

    assert {"model.safetensors", "config.json", "vocab.json", "merges.txt"} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "vocab.json").read_bytes() == (tiny_checkpoint / "vocab.json").read_bytes()
    names = set(load_file(tmp_path / "model.safetensors"))
    assert {"wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.attn.c_attn.weight", "ln_f.bias"} <= names
    assert not any(name.startswith("transformer.") for name in names)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "gpt2" and "minigpt_geom_norm" not in config

    idx = torch.tensor([Tokenizer.from_pretrained(tiny_checkpoint).encode("def add(a, b):\n    return a + b\n")])
    hf = load_hf(tmp_path)
    with torch.no_grad():
        expected = hf(idx).logits
        torch.testing.assert_close(model(idx), expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(GPT2.from_pretrained(tmp_path)(idx), expected, atol=1e-4, rtol=0)


@pytest.mark.slow  # a training run
@pytest.mark.parametrize("dropout", [0.0, 0.2])  # with dropout, the masks a resumed run draws are the same too
def test_resuming_gives_the_uninterrupted_run_bit_for_bit(dropout, tokens, tiny_checkpoint, tmp_path):
    settings = dict(steps=6, eval_interval=4, micro_batch=4, dropout=dropout)  # accumulation over 2 micro-batches
    whole = tiny_model()
    run(whole, tokens, tiny_checkpoint, tmp_path / "whole", **settings)
    run(tiny_model(), tokens, tiny_checkpoint, tmp_path / "parts", stop_at=3, **settings)
    assert json.loads((tmp_path / "parts" / "checkpoint" / "trainer_state.json").read_text())["step"] == 3
    resumed = GPT2.from_pretrained(tmp_path / "parts")
    log = train(resumed, load_tokens(tokens), tiny_checkpoint, tmp_path / "parts",
                TrainSettings(**{**FAST, **settings}), resume=True, progress=False)
    for (name, a), b in zip(whole.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    assert [row.step for row in log] == list(range(7))


@pytest.mark.slow  # a training run
def test_dyt_learns_alpha_and_saves_it_as_scalars(tokens, tiny_checkpoint, tmp_path):
    model = tiny_model("dyt")
    run(model, tokens, tiny_checkpoint, tmp_path, steps=10, eval_interval=10)
    alphas = [model.h[0].ln_1.alpha, model.h[1].ln_2.alpha, model.ln_f.alpha]
    assert all(abs(a.item() - 0.5) > 1e-3 for a in alphas)  # moved from the initial α = 0.5
    saved = load_file(tmp_path / "model.safetensors")
    assert saved["h.0.ln_1.alpha"].shape == () and saved["ln_f.alpha"].item() == model.ln_f.alpha.item()
    assert norm_spec(GPT2.from_pretrained(tmp_path)) == "dyt"
    idx = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(GPT2.from_pretrained(tmp_path)(idx), model(idx))


# ---- the command line, one process and two -----------------------------------------------------------------


def test_init_command_writes_a_checkpoint_every_loader_reads(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "new"
    assert main(["init", "-o", str(out), "--tokenizer", str(tiny_checkpoint), "--n-layer", "2", "--n-head", "2",
                 "--n-embd", "32", "--n-ctx", "64", "--norm", '{"ln_f": "sphere"}']) == 0
    assert "37,120 parameters" in capsys.readouterr().out
    loaded = GPT2.from_pretrained(out)
    norm = norm_spec(loaded)
    assert loaded.config.vocab_size == 300 and norm["ln_f"] == "sphere" and norm["h.1.ln_2"] == "layernorm"
    assert GPT2.from_pretrained(out).ln_f.variant.name == "sphere"
    idx = torch.tensor([[5, 6, 7]])
    with torch.no_grad():  # γ = 1, β = 0 at initialisation: a sphere ln_f computes what layer norm does
        expected = load_hf(out)(idx).logits
        torch.testing.assert_close(GPT2.from_pretrained(out)(idx), expected, atol=1e-4, rtol=0)


def test_train_corpus_out_trains_the_documented_default_model(tokens, tiny_checkpoint, tmp_path, capsys):
    from minigpt_geom.commands.init import DEFAULT_SHAPE

    out = tmp_path / "run"
    assert main(["train", str(tokens), "-o", str(out), "--tokenizer", str(tiny_checkpoint), "--steps", "2",
                 "--warmup", "1", "--batch-size", "2", "--context", "16", "--eval-windows", "2",
                 "--sample-tokens", "0", "--quiet"]) == 0
    config = GPT2.from_pretrained(out).config
    assert {name: getattr(config, name) for name in DEFAULT_SHAPE} == DEFAULT_SHAPE
    from minigpt_geom.cli import build_parser

    helps = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert f"{DEFAULT_SHAPE['n_layer']} layers, d = {DEFAULT_SHAPE['n_embd']}" in " ".join(helps.split())
    assert main(["init", "-o", str(tmp_path / "init"), "--tokenizer", str(tiny_checkpoint)]) == 0  # init agrees
    assert GPT2.from_pretrained(tmp_path / "init").config == config
    init_help = " ".join(build_parser()._subparsers._group_actions[0].choices["init"].format_help().split())
    assert f"(default: {DEFAULT_SHAPE['n_layer']} layers, {DEFAULT_SHAPE['n_head']} heads, d = " in init_help


@pytest.mark.subprocess
def test_two_processes_end_where_one_does(tokens, tiny_checkpoint, tmp_path, capsys):
    norm = '{"ln_1": "dyt", "ln_f": "sphere"}'  # learned scalars, and γ, β that get no gradient
    args = ["train", str(tokens), "--tokenizer", str(tiny_checkpoint), "--n-layer", "2", "--n-head", "2",
            "--n-embd", "32", "--n-ctx", "64", "--norm", norm, "--steps", "4", "--batch-size", "8",
            "--eval-interval", "4", "--warmup", "1", "--lr", "3e-3", "--quiet"]
    assert main(args + ["-o", str(tmp_path / "one")]) == 0
    assert capsys.readouterr().out.count("  sample: ") == 2  # at steps 0 and 4
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         "-m", "minigpt_geom.cli", *args, "--micro-batch", "2", "-o", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (load_file(tmp_path / name / "model.safetensors") for name in ("one", "two"))
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-5, rtol=0, msg=name)
    assert not torch.equal(one["h.0.ln_1.alpha"], torch.tensor(0.5))


def test_a_dyt_checkpoint_loads_with_its_variant_and_alpha(tiny_checkpoint, tmp_path):

    model = tiny_model(norm={"ln_1": "dyt", "ln_2": "dyt", "ln_f": "layernorm"})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".alpha"):
                p.fill_(0.5 + 0.01 * int(name.split(".")[1]))  # a different α per layer
    model.save_pretrained(tmp_path, tiny_checkpoint)
    loaded = GPT2.from_pretrained(tmp_path)  # the variant comes from config.json, α from the file
    assert loaded.h[1].ln_2.variant.name == "dyt" and loaded.ln_f.variant.name == "layernorm"
    assert loaded.h[1].ln_2.alpha.item() == pytest.approx(0.51)
    idx = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(idx), model(idx))
