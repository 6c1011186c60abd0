"""The training loss a chunk of positions at a time (issue 28, item 4): the value and every gradient of the plain
F.cross_entropy over the full logits (the oracle), without ever holding the [B, T, vocab] logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from minigpt_geom.training import loss as loss_module
from minigpt_geom.training.loop import NextTokenLoss
from minigpt_geom.training.loss import chunked_cross_entropy

from tiny_training import run, tiny_model


def plain_loss(x_hat, weight, bias, targets, reduction):
    """The oracle: every logit at once, then F.cross_entropy."""
    logits = x_hat @ weight.T + (0 if bias is None else bias)
    return F.cross_entropy(logits, targets, reduction=reduction)


@pytest.mark.parametrize("untied", [False, True], ids=["tied", "untied with a bias"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("rows", [1, 7, 37, 100])  # chunks of one position, ragged, exactly N, more than N
def test_chunked_loss_and_gradients_are_the_plain_cross_entropys(untied, reduction, rows):
    generator = torch.Generator().manual_seed(rows)
    N, d, V = 37, 16, 53
    x = torch.randn(N, d, generator=generator, requires_grad=True)
    W = (0.5 * torch.randn(V, d, generator=generator)).requires_grad_()
    b = torch.randn(V, generator=generator, requires_grad=True) if untied else None
    y = torch.randint(0, V, (N,), generator=generator)
    inputs = [x, W] + ([b] if untied else [])
    upstream = 1.7  # ∂(what follows)/∂L, as gradient accumulation's 1/k
    expected = plain_loss(x, W, b, y, reduction)
    expected_grads = torch.autograd.grad(upstream * expected, inputs)
    got = chunked_cross_entropy(x, W, b, y, reduction, rows=rows)
    grads = torch.autograd.grad(upstream * got, inputs)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5)
    for grad, oracle in zip(grads, expected_grads):
        torch.testing.assert_close(grad, oracle, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # evaluation: the value alone
        torch.testing.assert_close(chunked_cross_entropy(x, W, b, y, reduction, rows=rows), expected)


@pytest.mark.parametrize("norm", ["layernorm", "dyt"])
def test_the_training_loss_through_the_model_has_every_parameters_gradient(norm, monkeypatch):
    """NextTokenLoss of a tiny GPT-2 (E is both embedding and unembedding): the loss and the gradient of every
    parameter are those of F.cross_entropy over model(x)'s logits."""
    monkeypatch.setattr(loss_module, "CHUNK_BYTES", 50 * 300 * 4)  # 50 positions a chunk: 3 chunks of 128
    model = tiny_model(norm)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 300, (2, 65), generator=generator)
    x, y = ids[:, :-1], ids[:, 1:]
    expected = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    expected_grads = torch.autograd.grad(expected, list(model.parameters()))
    got = NextTokenLoss(model)(x, y)
    grads = torch.autograd.grad(got, list(model.parameters()))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    for (name, _), grad, oracle in zip(model.named_parameters(), grads, expected_grads):
        torch.testing.assert_close(grad, oracle, rtol=1e-4, atol=1e-7, msg=name)


class LargestTensors(TorchDispatchMode):
    """Records the element count of every tensor an operation creates (not one written through out=)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        given = {id(t) for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and id(t) not in given:
                self.sizes.append((t.numel(), str(func)))
        return out


def test_training_never_makes_the_full_logits(tokens, tiny_checkpoint, tmp_path, monkeypatch, one_thread):
    """A whole run (steps, evaluations, checkpoints) creates no tensor of half the [B, T, vocab] logits' size:
    the loss unembeds 64 positions at a time, into one buffer kept from step to step."""
    monkeypatch.setattr(loss_module, "CHUNK_BYTES", 64 * 300 * 4)
    batch, context, vocabulary = 8, 64, 300
    with LargestTensors() as seen:
        run(tiny_model(), tokens, tiny_checkpoint, tmp_path, steps=3, eval_interval=3, batch_size=batch,
            context=context)
    largest = max(seen.sizes)
    assert largest[0] < batch * context * vocabulary / 2, largest


def test_the_chunk_buffer_is_made_once_and_reused(monkeypatch):
    monkeypatch.setattr(loss_module, "CHUNK_BYTES", 16 * 300 * 4)
    loss = NextTokenLoss(tiny_model())
    ids = torch.randint(0, 300, (2, 33), generator=torch.Generator().manual_seed(1))
    loss(ids[:, :-1], ids[:, 1:]).backward()
    (buffer,) = loss.workspace.buffers.values()
    pointer = buffer.data_ptr()
    loss(ids[:, :-1], ids[:, 1:]).backward()
    assert list(loss.workspace.buffers.values()) == [buffer] and buffer.data_ptr() == pointer
    assert buffer.shape == (16, 300)


def test_bfloat16_autocast_gives_the_plain_losss_value_and_gradients_to_bfloat16_precision():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(40, 16, generator=generator, requires_grad=True)
    W = (0.5 * torch.randn(53, 16, generator=generator)).requires_grad_()
    y = torch.randint(0, 53, (40,), generator=generator)
    with torch.autocast("cpu", torch.bfloat16):
        expected = F.cross_entropy((x @ W.T).float(), y)  # the plain loss under autocast: bfloat16 logits
        got = chunked_cross_entropy(x, W, None, y, rows=9)
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
    for grad, oracle in zip(torch.autograd.grad(got, [x, W]), torch.autograd.grad(expected, [x, W])):
        assert grad.dtype == torch.float32
        torch.testing.assert_close(grad, oracle, rtol=5e-2, atol=5e-3)

