"""Issue 27: "a norm swap (`set_norm`) while another thread runs forward passes gives passes that mix both
variants: each site is swapped atomically, the model is not." Now the model's swap is atomic: a forward pass
reads the model's norm assignment once and runs it at every site, so each pass is one of the two pure models.

The oracle is each pure model by itself (`with_norm`, no other thread): every pass of the threaded run must give
its logits, to float32 rounding; a pass that mixed the variants lands 1e-2 or more away from both."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import torch

from minigpt_geom import GPT2
from minigpt_geom.config import GPT2Config

PASSES = 300  # forward passes of the tiny model, about a millisecond each
SWAP = ("layernorm", "dyt")  # dyt learns α per site: a swap replaces a variant together with its scalars


@pytest.fixture
def frequent_thread_switches(one_thread):
    """Let the interpreter switch threads every 10 µs instead of 5 ms, so swaps land inside passes."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(interval)


def tiny_model() -> GPT2:
    """Three blocks (seven norm sites), d = 16, with random γ, β so that every site's variant shows in the logits."""
    model = GPT2(GPT2Config(n_layer=3, n_head=2, n_embd=16, n_ctx=8, vocab_size=32), seed=0).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for site in model.norm_sites().values():
            site.weight.copy_(1 + 0.3 * torch.randn(16, generator=generator))
            site.bias.copy_(0.3 * torch.randn(16, generator=generator))
    return model


@torch.no_grad()
def test_a_norm_swap_while_another_thread_runs_forward_passes_never_mixes_the_variants(frequent_thread_switches):
    model = tiny_model()
    idx = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(2))
    pure = {name: model.with_norm(name)(idx) for name in SWAP}  # the oracle: each variant alone
    assert (pure["layernorm"] - pure["dyt"]).abs().max() > 0.1  # the two are far apart
    # A pass that mixes them differs from both (every site matters): checked, so the test can tell.
    mixed = model.with_norm({"h.0.ln_1": "dyt"})(idx)
    assert min((mixed - logits).abs().max() for logits in pure.values()) > 1e-2

    stop, swaps = threading.Event(), [0]

    def swap() -> None:
        while not stop.is_set():
            model.set_norm(SWAP[swaps[0] % 2])
            swaps[0] += 1

    swapper = threading.Thread(target=swap)
    seen, errors, deadline = [], [], time.monotonic() + 5  # bounded on a loaded machine
    swapper.start()
    try:
        while len(seen) < PASSES and time.monotonic() < deadline:
            try:
                seen.append(model(idx))
            except Exception as error:  # noqa: BLE001 - the test is that nothing escapes a pass
                errors.append(repr(error))
    finally:
        stop.set()
        swapper.join()
    assert not errors, errors[:3]
    distances = [{name: (logits - pure[name]).abs().max().item() for name in SWAP} for logits in seen]
    mixed = [d for d in distances if min(d.values()) > 1e-5]
    assert not mixed, f"{len(mixed)} of {len(seen)} passes mixed the variants, e.g. {mixed[0]}"
    pure_passes = {min(d, key=d.get) for d in distances}
    assert pure_passes == set(SWAP) and swaps[0] > 10, (pure_passes, swaps[0])  # the swaps ran during the passes
