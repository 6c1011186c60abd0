"""GPT-2: token + position embedding, L blocks, a final sphere projection, the tied unembedding.

    x_0 = E[idx] + P[pos]                  [B, T, d]  (in training, dropped out with p = config.dropout: dropout.py)
    x_l+1 = block_l(x_l)                   residual updates (block.py)
    logits = LN_f(x_L) Eᵀ                  nearest words on the output sphere, [B, T, vocab]

After a fold (fold.py) the unembedding is untied, logits = LN_f(x_L) Wᵀ + b; every analysis that decodes a
state goes through `model.lm_head`, so it decodes what the model itself does.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from .block import Block
from .cache import KVCache
from .dropout import dropout
from .editing import NO_EDITS, NoEdits, Plan, check_edits
from .edits import Edit
from ..config import GPT2Config, norm_site_names, site_name
from ..errors import InputError
from .fold import fold_model
from .kernels import check_kernels, chosen_kernels
from .norm_site import NormTable, SphereNorm
from .pretrained import load_pretrained, save_pretrained
from .variants import NormSpec, assigned_norms, check_norm_spec, norm_for_site
from .trace import Trace
from .trace_request import TraceRequest, as_request


class Embedding(nn.Module):
    """A lookup table: row i of `weight` [n, d] is the vector of token (or position) i."""

    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, d))

    def forward(self, idx: Tensor) -> Tensor:
        """idx [...] -> [..., d]."""
        return self.weight[idx]


class Unembedding(nn.Module):
    """logits = x̂ Eᵀ, tied to the token embedding E; or x̂ Wᵀ + b, untied, once a fold moved ln_f's γ, β into it.

    Untied, `weight` [vocab, d] and `bias` [vocab] are saved as `lm_head.weight` and `lm_head.bias`."""

    def __init__(self) -> None:
        super().__init__()
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None

    @property
    def tied(self) -> bool:
        """True while the unembedding is the token embedding E itself."""
        return self.weight is None

    def untie(self, E: Tensor) -> None:
        """Become W = E (a copy), b = 0: the same logits, now free to change apart from E."""
        if self.tied:
            self.weight = nn.Parameter(E.detach().clone())
            self.bias = nn.Parameter(torch.zeros(E.shape[0], dtype=E.dtype, device=E.device))

    def forward(self, x_hat: Tensor, E: Tensor) -> Tensor:
        """x̂ [..., d] -> logits [..., vocab]."""
        if self.tied:
            return x_hat @ E.T
        return torch.addmm(self.bias, x_hat.reshape(-1, x_hat.shape[-1]), self.weight.T).view(*x_hat.shape[:-1], -1)

    def word_logits(self, x_hat: Tensor, ids: Tensor, E: Tensor) -> Tensor:
        """The logit of word ids[...] alone for each x̂ [..., d] -> [...]: one column of forward, no vocab matmul."""
        if self.tied:
            return (x_hat * E[ids]).sum(dim=-1)
        return (x_hat * self.weight[ids]).sum(dim=-1) + self.bias[ids]


class GPT2(nn.Module):
    """GPT-2 in pure PyTorch; parameter names are those of the official checkpoint (`h.0.attn.c_attn.weight`)."""

    def __init__(self, config: GPT2Config, norm: NormSpec = "layernorm", *, seed: int | None = 0,
                 kernels: str = "fused") -> None:
        """A GPT-2 of this shape initialised as GPT-2 is (init_weights) from a generator seeded with `seed`;
        seed=None leaves the parameters uninitialised (torch.empty), for a loader that fills every one.
        `kernels` names the implementation of its steps (kernels.py): "fused" or "reference"."""
        check_norm_spec(norm, norm_site_names(config.n_layer))  # before anything is allocated
        super().__init__()
        self.config = config
        self.kernels = kernels
        d = config.n_embd
        self.wte = Embedding(config.vocab_size, d)  # E, also the unembedding (tied)
        self.wpe = Embedding(config.n_ctx, d)
        self.h = nn.ModuleList(
            Block(d, config.n_head, config.ln_eps, (norm_for_site(norm, site_name(i, "ln_1")),
                                                  norm_for_site(norm, site_name(i, "ln_2"))))
            for i in range(config.n_layer)
        )
        self.ln_f = SphereNorm(d, config.ln_eps, norm_for_site(norm, "ln_f"))
        self.lm_head = Unembedding()  # tied to wte until a fold
        self.norm_table = NormTable.join(self.norm_sites())  # every site's variant: set_norm swaps them in one step
        if seed is not None:
            init_weights(self, seed)

    @property
    def kernels(self) -> str:
        """The name of the kernel set this model's forward pass runs (kernels.KERNELS): "fused" or "reference"."""
        return self.kernel_name

    @kernels.setter
    def kernels(self, name: str) -> None:
        self.kernel_name = check_kernels(name)

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, idx: Tensor, *, trace: bool | TraceRequest | None = None, cache: KVCache | None = None,
                last_only: bool = False, edits: Sequence[Edit] | None = None) -> Tensor | tuple[Tensor, Trace]:
        """idx [B, T] token ids -> logits [B, T, vocab], or (logits, Trace) when `trace` is True or a request.

        With `cache`, idx holds only the new positions and the cache grows by them (generation).
        `last_only` unembeds the last position alone: [B, 1, vocab]. `edits` change the pass at its own
        steps (edits.py), each checked before the pass runs."""
        start = cache.length if cache is not None else 0
        self.check_input(idx, start)
        request = as_request(trace)
        plan = self.check_edits(edits, idx.shape[0], idx.shape[1], start, request)
        return self.run(idx, request, cache, last_only, plan)

    def check_edits(self, edits: Sequence[Edit] | None, batch: int, length: int, start: int = 0,
                    trace: TraceRequest | None = None) -> Plan | NoEdits:
        """The plan that applies `edits` (and the request's captures) to a pass over `length` positions after
        `start` cached ones; InputError naming the edit and field at fault (editing.py)."""
        capture = trace.capture if trace is not None else ()
        return check_edits(self, edits, batch, length, start, capture, report=trace is not None)

    def run(self, idx: Tensor, trace: TraceRequest | None = None, cache: KVCache | None = None,
            last_only: bool = False, edits: Plan | NoEdits = NO_EDITS) -> Tensor | tuple[Tensor, Trace]:
        """The forward pass on ids and edits already checked (`forward` checks them; generation once a call)."""
        x_hat, traced = self.final_points(idx, trace, cache, edits)
        logits = self.unembed(x_hat[:, -1:] if last_only else x_hat)  # the unembedding is the costly part
        return logits if trace is None else (logits, traced)

    def final_points(self, idx: Tensor, trace: TraceRequest | None = None, cache: KVCache | None = None,
                     edits: Plan | NoEdits = NO_EDITS) -> tuple[Tensor, Trace | None]:
        """x̂ = LN_f(x_L) [B, T, d] of ids and edits already checked, and the Trace when `trace` asks for one: the
        forward pass up to the unembedding (training unembeds x̂ a chunk of positions at a time: training/loss.py)."""
        kernels = chosen_kernels(self.kernel_name)  # read once: the whole pass runs one set
        norms = self.norm_table.bindings  # read once too: every site runs these variants, whatever set_norm does
        p = self.config.dropout if self.training else 0.0  # dropout in training mode only (model.train())
        start = cache.length if cache is not None else 0
        x = self.wte(idx) + self.wpe(torch.arange(start, start + idx.shape[1], device=idx.device))  # x_0
        x = dropout(x, p)  # embd_pdrop
        keep_states = trace is not None and trace.states
        states, blocks = [x], []
        for i, block in enumerate(self.h):
            x, diagnostics = block(x, trace, cache.layers[i] if cache is not None else None, kernels, edits.layer(i),
                                   norms, p)
            blocks.append(diagnostics)
            if keep_states:
                states.append(x)
        x_hat, ln_f = self.ln_f(x, trace, kernels, edits.layer(None).site("ln_f"), norms)
        if trace is None:
            return x_hat, None
        return x_hat, Trace.gather(blocks, ln_f, torch.stack(states) if keep_states else None, edits.captured(),
                                   tuple(edits.applied))

    def unembed(self, x_hat: Tensor) -> Tensor:
        """x̂ = ln_f(x) [..., d] -> logits [..., vocab] through the one unembedding (tied E, or folded)."""
        return self.lm_head(x_hat, self.wte.weight)

    def unembedding_rows(self) -> Tensor:
        """The rows e_v [vocab, d] the unembedding matches x̂ against: E when tied, the folded W otherwise."""
        return self.wte.weight if self.lm_head.tied else self.lm_head.weight

    def word_logits(self, x_hat: Tensor, ids: Tensor) -> Tensor:
        """x̂ [..., d], ids [...] -> the logit of word ids[...] alone [...]: unembed(x̂)[..., ids], cheaply."""
        return self.lm_head.word_logits(x_hat, ids, self.wte.weight)

    def check_input(self, idx: Tensor, start: int = 0) -> None:
        """Raise InputError unless idx is an integer [B, T] tensor of in-vocabulary ids that fits the context."""
        if not isinstance(idx, Tensor):
            raise InputError(f"token ids must be a torch.Tensor, got {type(idx).__name__}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise InputError(f"token ids must be an int64 or int32 tensor, got dtype {idx.dtype}")
        if idx.dim() != 2:
            hint = " (use idx.unsqueeze(0) for a single sequence)" if idx.dim() == 1 else ""
            raise InputError(f"token ids must have shape [batch, time], got {tuple(idx.shape)}{hint}")
        B, T = idx.shape
        if B == 0 or T == 0:
            raise InputError(f"token ids must be non-empty, got shape {tuple(idx.shape)}")
        if start + T > self.config.n_ctx:
            raise InputError(
                f"sequence of {start + T} tokens is longer than the context of {self.config.n_ctx} positions"
            )
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= self.config.vocab_size:
            bad = low if low < 0 else high
            raise InputError(f"token id {bad} is outside the vocabulary [0, {self.config.vocab_size})")

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike = "gpt2",
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        norm: NormSpec | None = None,
        fold_ln: bool = False,
    ) -> "GPT2":
        """Load a preset (`gpt2` … `gpt2-xl`), a hub repo id, a local directory or a `.safetensors` file.

        norm=None keeps the checkpoint's own variant (GPT-2's layer norm unless its config.json names another;
        a file with layer norm switched off by ε = 1e12 becomes an exact norm="none" model)."""
        model = load_pretrained(cls, source, device=device, dtype=dtype, norm=norm)
        return fold_model(model) if fold_ln else model

    def save_pretrained(self, folder: str | os.PathLike, tokenizer_source: str | os.PathLike,
                        eot_id: int | None = None) -> Path:
        """Write config.json, the tokenizer's files (copied from `tokenizer_source`) and model.safetensors into
        `folder` as one checkpoint that from_pretrained and transformers load."""
        return save_pretrained(self, folder, tokenizer_source, eot_id)

    def norm_sites(self) -> dict[str, SphereNorm]:
        """Every norm site by name, in forward order: h.0.ln_1, h.0.ln_2, …, ln_f."""
        return {name: module for name, module in self.named_modules() if isinstance(module, SphereNorm)}

    def set_norm(self, norm: NormSpec) -> "GPT2":
        """Swap the norm variant of every site (or of the sites a mapping names; the others keep theirs) in place.

        The swap is atomic for the whole model: a forward pass reads every site's variant once, at its start
        (norm_site.NormTable), so a pass running in another thread runs the old variants at every site or the
        new ones at every site, never a mix. InputError, before any site changes, for an unknown variant or a
        mapping that names a site this model lacks."""
        sites = self.norm_sites()
        self.norm_table.swap(sites, assigned_norms(norm, list(sites)))
        return self

    def with_norm(self, norm: NormSpec) -> "GPT2":
        """A new model with other norm variants (as set_norm assigns them) that shares this one's weights; this
        model is left as it is."""
        shared = {id(p): p for p in self.parameters()}  # deepcopy copies the modules, not these tensors
        return copy.deepcopy(self, memo=shared).set_norm(norm)

    def fold_ln(self) -> "GPT2":
        """A copy with every site's γ, β folded into the linear map that reads it (fold.py); this model is left
        as it is. Blocks then read bare projections, and the unembedding becomes γ ⊙ E with bias Eβ."""
        return fold_model(copy.deepcopy(self))

    def num_parameters(self) -> int:
        """Number of parameters (the tied unembedding counted once; fold_ln adds an untied one)."""
        return sum(p.numel() for p in self.parameters())


@torch.no_grad()
def init_weights(model: GPT2, seed: int = 0) -> GPT2:
    """GPT-2's initialisation: matrices ~ N(0, 0.02²), residual projections (c_proj) ~ N(0, (0.02/√(2L))²),
    biases 0, γ = 1, β = 0, a variant's scalars at their initial values.

    Each residual update adds to x; 2L of them (attention and MLP in each of L blocks) would grow ‖x‖ like
    √(2L), which the smaller c_proj compensates (GPT-2 paper, section 2.3)."""
    generator = torch.Generator().manual_seed(seed)
    residual_std = 0.02 / math.sqrt(2 * model.config.n_layer)
    for name, p in model.named_parameters():
        if p.dim() == 2:
            std = residual_std if name.endswith("c_proj.weight") else 0.02
            p.normal_(0.0, std, generator=generator)
        elif name.endswith("bias"):
            p.zero_()
        elif name.endswith("weight"):  # γ of a norm site
            p.fill_(1.0)
    for module in model.norm_sites().values():
        for scalar, initial in module.variant.parameters.items():
            getattr(module, scalar).fill_(initial)
    return model
