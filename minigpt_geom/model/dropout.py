"""Dropout, GPT-2's regulariser in training: each number is zeroed with probability p and the survivors scaled by
1/(1 − p), so that E[dropout(x)] = x and a model in eval mode (no dropout) sees activations of the same size.

GPT-2 drops at three steps, each with one p here (config.dropout, as nanoGPT; transformers names the three
embd_pdrop, attn_pdrop and resid_pdrop, and config.json records p under each):

    x_0   = dropout(E[idx] + P[pos])               gpt2.py                        (embd_pdrop)
    a_ij  = dropout(softmax_j(s_ij))               attention.py; the fused kernel  (attn_pdrop)
                                                   passes p to scaled_dot_product_attention
    x_mid = x_l + dropout(attn_l(LN_1(x_l)))       block.py, and the same for the  (resid_pdrop)
                                                   MLP's update

Only in training mode (`model.train()`): in eval mode, as from_pretrained returns a model, and during generation
each step is the identity, as it is whenever p = 0 (then no random number is drawn: the pass is bitwise the one
without dropout).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch.nn.functional as F
from torch import Tensor, nn


def dropout(x: Tensor, p: float) -> Tensor:
    """x [...] with each entry zeroed with probability p and the rest scaled by 1/(1 − p); x itself when p = 0."""
    return x if p == 0 else F.dropout(x, p, training=True)


@contextmanager
def in_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """`model` in training mode (dropout on) or eval mode (off) inside the block, in its own mode again after."""
    was = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(was)
