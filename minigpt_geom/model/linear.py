"""The affine map y = x W + b with W stored [in, out] (row vectors, as in the paper and GPT-2's files)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Affine(nn.Module):
    """y = x W + b; W is [n_in, n_out], the layout of GPT-2's `Conv1D` weights, so no transposes on load."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: Tensor) -> Tensor:
        """x [..., n_in] -> [..., n_out]; addmm fuses the bias add into the matrix product."""
        flat = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return flat.view(*x.shape[:-1], flat.shape[-1])

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]} -> {self.weight.shape[1]}"
