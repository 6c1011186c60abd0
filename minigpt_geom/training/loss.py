"""The training loss without the full logits: cross-entropy with the unembedding done a chunk of positions at a time.

For N positions with final points x̂_i [d], the unembedding's rows W [V, d] (E itself when tied) and bias b [V]
(a folded, untied unembedding's; none when tied), and the next ids y_i:

    z_i = W x̂_i + b                      logits [V]
    ℓ_i = logsumexp(z_i) − z_i[y_i]      cross-entropy, nats;  L = (1/N) Σ ℓ_i  (or Σ ℓ_i)
    ∂ℓ_i/∂z_i = p_i − 1_{y_i}            p_i = softmax(z_i)
    G = (P − Y)/N  [N, V]:   ∂L/∂x̂ = G W,   ∂L/∂W = Gᵀ X̂,   ∂L/∂b = Σ_i G_i

The plain loss, F.cross_entropy of every logit at once, holds [N, V] floats several times over (the logits, their
log-softmax, the gradient of each): with GPT-2's 50257 words and 16 × 128 positions, 411 MB apiece, allocated
afresh at every step, each page of them faulted in by the kernel (bench/NOTES.md has the figures). Here one chunk
of positions is unembedded at a time into one buffer [C, V] kept from step to step, and G's contribution to the
three gradients is taken right there, in the forward pass; backward only scales them by ∂(what follows)/∂L.
Memory O(C·V + N·d + V·d) instead of O(N·V); the same three matrix products as the plain loss's forward and
backward (tests/training/test_train_loss.py holds the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

CHUNK_BYTES = 16 * 2**20  # one chunk's float32 logits: 83 positions of GPT-2's 50257 words. Below glibc's largest
# mmap threshold (32 MB), so the chunk-sized temporaries of softmax come from the heap instead of fresh pages
# faulted in at every step (bench/NOTES.md: a 4096-word model's step at 32 MB spent 15 % of its time in the kernel)


def chunk_rows(vocab_size: int) -> int:
    """Positions per chunk: as many as fit CHUNK_BYTES of float32 logits, at least one."""
    return max(1, CHUNK_BYTES // (4 * vocab_size))


class Workspace:
    """The chunk's logits buffer [C, V], made once and reused at every step (a fresh 32 MB each step would be
    paged in by the kernel each time), and its copy in the compute dtype under bfloat16 autocast."""

    def __init__(self) -> None:
        self.buffers: dict[tuple, Tensor] = {}

    def buffer(self, rows: int, columns: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A [rows, columns] tensor of `dtype` on `device`, the same storage every time it is asked for."""
        key = (rows, columns, dtype, device)
        if key not in self.buffers:
            self.buffers[key] = torch.empty(rows, columns, dtype=dtype, device=device)
        return self.buffers[key]


def compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype the unembedding's products run in: autocast's (bfloat16) inside an autocast region, else float32."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else torch.float32


def chunk_logits(x: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor, out32: Tensor) -> Tensor:
    """z = x Wᵀ + b for one chunk, into `out` (compute dtype), then into `out32` (float32, the same tensor when
    the compute dtype is float32): the float32 logits [C, V], in the workspace."""
    torch.matmul(x, weight.T, out=out)
    if out32 is not out:
        out32.copy_(out)
    if bias is not None:
        out32.add_(bias)
    return out32


def chunk_loss(z: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(Σ ℓ_i over the chunk, logsumexp(z_i) [C]) from float32 logits z [C, V] and ids y [C]."""
    lse = torch.logsumexp(z, dim=1)
    return (lse - z.gather(1, y[:, None])[:, 0]).sum(), lse


@dataclass
class Pass:
    """What one pass over the chunks gives: Σ ℓ_i, and the gradients of scale · Σ ℓ_i asked for (else None)."""

    loss: Tensor
    grad_x: Tensor | None = None
    grad_w: Tensor | None = None
    grad_b: Tensor | None = None


def chunked_pass(x_hat: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, scale: float, rows: int,
                 workspace: Workspace, wanted: tuple[bool, bool, bool] = (False, False, False)) -> Pass:
    """Σ ℓ_i over x̂ [N, d] chunk by chunk and, for each of (x̂, W, b) `wanted`, G's part of its gradient."""
    n, v = x_hat.shape[0], weight.shape[0]
    dtype = compute_dtype(x_hat.device)
    with torch.autocast(x_hat.device.type, enabled=False):  # the dtypes are chosen here, explicitly
        X, W = x_hat.to(dtype), weight.to(dtype)
        float32 = dict(dtype=torch.float32, device=weight.device)
        result = Pass(torch.zeros((), dtype=torch.float32, device=x_hat.device),
                      torch.empty_like(x_hat) if wanted[0] else None,
                      torch.zeros(weight.shape, **float32) if wanted[1] else None,
                      torch.zeros(v, **float32) if bias is not None and wanted[2] else None)
        for start in range(0, n, rows):
            x, y = X[start:start + rows], targets[start:start + rows]
            c = x.shape[0]
            out32 = workspace.buffer(rows, v, torch.float32, x_hat.device)[:c]
            out = out32 if dtype == torch.float32 else workspace.buffer(rows, v, dtype, x_hat.device)[:c]
            z = chunk_logits(x, W, bias, out, out32)
            loss, lse = chunk_loss(z, y)
            result.loss += loss
            if not any(wanted):
                continue
            G = z.sub_(lse[:, None]).exp_()  # p_i, in place of the logits
            G[torch.arange(c, device=G.device), y] -= 1  # p_i − 1_{y_i}
            G.mul_(scale)
            G_c = G if out is out32 else out.copy_(G)  # G in the compute dtype
            if result.grad_x is not None:
                result.grad_x[start:start + c] = G_c @ W  # G W
            if result.grad_w is not None and G_c.dtype == torch.float32:
                result.grad_w.addmm_(G_c.T, x)  # += Gᵀ X̂, into the one accumulator
            elif result.grad_w is not None:
                result.grad_w += G_c.T @ x
            if result.grad_b is not None:
                result.grad_b += G.sum(dim=0)
    return result


class ChunkedCrossEntropy(torch.autograd.Function):
    """scale · Σ ℓ_i of x̂ [N, d], W [V, d], b [V] or None, with ∂/∂x̂, ∂/∂W, ∂/∂b taken in the forward pass."""

    @staticmethod
    def forward(ctx, x_hat: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, scale: float,
                rows: int, workspace: Workspace) -> Tensor:
        result = chunked_pass(x_hat, weight, bias, targets, scale, rows, workspace, ctx.needs_input_grad[:3])
        ctx.grads = (result.grad_x, result.grad_w, result.grad_b)  # made here: kept on ctx, not saved tensors
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return result.loss * scale

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        grad_x, grad_w, grad_b = (None if g is None else g.mul_(grad_output) for g in ctx.grads)  # chain rule
        weight_dtype, bias_dtype = ctx.dtypes
        return (grad_x, None if grad_w is None else grad_w.to(weight_dtype),
                None if grad_b is None else grad_b.to(bias_dtype), None, None, None, None)


def chunked_cross_entropy(x_hat: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                          reduction: str = "mean", workspace: Workspace | None = None,
                          rows: int | None = None) -> Tensor:
    """Cross-entropy of the logits x̂ Wᵀ + b [N, V] against targets [N], without holding them: the same value
    and gradients as F.cross_entropy of those logits, `rows` positions at a time (default: CHUNK_BYTES of logits)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    rows = rows or chunk_rows(weight.shape[0])
    workspace = workspace or Workspace()
    scale = 1.0 / x_hat.shape[0] if reduction == "mean" else 1.0
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x_hat, weight, bias)):
        return ChunkedCrossEntropy.apply(x_hat, weight, bias, targets, scale, rows, workspace)
    return chunked_pass(x_hat, weight, bias, targets, scale, rows, workspace).loss * scale  # evaluation: no gradients
