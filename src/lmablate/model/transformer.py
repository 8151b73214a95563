"""The language model: a decoder-only transformer, Llama-compatible by default.

Token embedding (+ a position embedding with ``positions: learned``) -> ``n_layers``
blocks -> final norm -> LM head (tied to the embedding by default; logits soft-capped with
``logit_softcap``). A block with the default pre-norm placement is
``x = x + attn(attn_norm(x)); x = x + mlp(mlp_norm(x))``; ``norm_placement`` moves the norms
(post: onto each branch's output; sandwich: both), ``parallel_block`` sums both branches of the
same input, and ``dropout`` drops each branch's output while training.

The defaults keep it interchangeable with ``transformers.LlamaForCausalLM`` (a test checks logit
parity on a tiny config), each in its component's file:
- RMSNorm computed in float32 and cast back before the weight multiply, as Llama does
  (``norms.py``).
- Rotary embeddings in the "rotate-half" layout of the Hugging Face implementation (the first
  and second halves of each head are the rotated pairs, not interleaved even/odd dimensions;
  ``positions.py``).
- Separate q/k/v/o projections with no biases; grouped-query attention via ``n_kv_heads``
  (``attention.py``).
Other choices export to the Hugging Face architecture that computes them (``export.py``).

Initialization: N(0, init_std) for every weight matrix and embedding, zeros for biases, ones for
norm gains; ``init`` rescales (GPT-2's 1/sqrt(2 n_layers)) or zeroes the output projections.
``parametrization: mup`` (Yang et al. 2022) draws the hidden matrices at init_std / sqrt(m),
multiplies the head's input by 1 / m and scales attention by 1 / head_dim, m being the width
multiplier d_model / mup_base_width (``ModelConfig.width_mult``); at m = 1 it is sp.
Modules are built in a fixed order, so a seed gives the same default model as it always did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lmablate.config.components import ATTENTION, POSITIONS
from lmablate.config.run import ModelConfig
from lmablate.errors import LmablateError
from lmablate.model.loss import HeadLoss, head_losses
from lmablate.model.mlp import build_mlp
from lmablate.model.norms import RMSNorm, build_norm


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, window: int | None = None) -> None:
        super().__init__()
        before = cfg.norm_placement in ("pre", "sandwich")
        after = cfg.norm_placement in ("post", "sandwich")
        self.parallel = cfg.parallel_block
        self.attn_norm = build_norm(cfg.d_model, cfg) if before else nn.Identity()
        self.attn = ATTENTION.builder(cfg.attention)(cfg, window)
        self.mlp_norm = build_norm(cfg.d_model, cfg) if before else nn.Identity()
        self.mlp = build_mlp(cfg)
        self.attn_out_norm = build_norm(cfg.d_model, cfg) if after else nn.Identity()
        self.mlp_out_norm = build_norm(cfg.d_model, cfg) if after else nn.Identity()
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None, **attn
    ) -> torch.Tensor:
        if self.parallel:  # both branches read the same input
            branch = self.drop(self.attn(self.attn_norm(x), cos, sin, **attn))
            return x + branch + self.drop(self.mlp(self.mlp_norm(x)))
        x = x + self.drop(self.attn_out_norm(self.attn(self.attn_norm(x), cos, sin, **attn)))
        return x + self.drop(self.mlp_out_norm(self.mlp(self.mlp_norm(x))))


class LM(nn.Module):
    """Maps token ids (B, T) to next-token logits (B, T, vocab_size)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, cfg.window_of(i)) for i in range(cfg.n_layers))
        self.norm = build_norm(cfg.d_model, cfg)
        self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.position = POSITIONS.builder(cfg.positions)(cfg)  # built last: the seed's draws
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, init_std) for every weight matrix, zeros for biases, ones for norm gains; then
        ``init`` for the output projections. Seed torch first to fix it."""
        # mup: hidden matrices (variance 1 / fan_in as the width grows) at init_std / sqrt(m);
        # the embedding and the head keep init_std (the head's output is scaled by 1 / m)
        hidden_std = self.cfg.init_std / math.sqrt(self.cfg.width_mult)
        fixed = {id(self.embed), id(self.lm_head)}
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                std = self.cfg.init_std if id(module) in fixed else hidden_std
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm | nn.LayerNorm):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        if self.cfg.init == "normal":
            return
        std = hidden_std / math.sqrt(2 * self.cfg.n_layers)
        for block in self.blocks:
            for projection in (block.attn.o_proj, getattr(block.mlp, "down_proj", None)):
                if projection is None:
                    continue
                if self.cfg.init == "depth_scaled":
                    nn.init.normal_(projection.weight, mean=0.0, std=std)
                else:
                    nn.init.zeros_(projection.weight)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        z_loss: float = 0.0,
    ) -> torch.Tensor | HeadLoss:
        """Logits: ``model(ids)``, causal over 0..T-1. Training: ``model(ids, targets=...)``
        returns the loss instead (``HeadLoss``: the objective to differentiate, its mean
        cross-entropy and its ``z_loss`` term), without materializing the logits (loss.py).
        Decoding: per-sequence ``positions`` (B, T), a ``cache`` that this call extends, and an
        attention ``mask`` (B, 1, T, keys)."""
        hidden = self.hidden_states(input_ids, positions, cache, mask)
        if targets is not None:
            hidden = self._head_input(hidden)
            return head_losses(hidden, self.lm_head.weight, targets, self.cfg.logit_softcap, z_loss)
        return self.logits(hidden)

    def _head_input(self, hidden: torch.Tensor) -> torch.Tensor:
        """mup's output multiplier 1 / m, applied to the head's input (the same as to its
        logits, before any soft-cap); the identity under sp."""
        m = self.cfg.width_mult
        return hidden if m == 1.0 else hidden * (1.0 / m)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head on final hidden states (times mup's 1 / m), soft-capped with
        ``logit_softcap``."""
        logits = self.lm_head(self._head_input(hidden))
        cap = self.cfg.logit_softcap
        return logits if cap is None else cap * torch.tanh(logits / cap)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final normalized hidden states (B, T, d_model): the LM head's input."""
        limit = getattr(self.position, "max_positions", None)
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        elif limit is not None and int(positions.max()) >= limit:
            raise LmablateError(
                f"position {int(positions.max())} is beyond the learned position table "
                f"(model.max_positions = {limit}); generate fewer tokens"
            )
        cos, sin = self.position.rotary(positions) or (None, None)
        x = self.embed(input_ids)  # (B, T, d_model)
        added = self.position.embedding(positions)
        if added is not None:
            x = x + added  # (T, d_model) or (B, T, d_model)
        for i, block in enumerate(self.blocks):
            if cache is None:
                x = block(x, cos, sin, mask=mask)
            else:
                layer = (cache.keys[i], cache.values[i])
                x = block(x, cos, sin, cache=layer, start=cache.length, mask=mask)
        if cache is not None:
            cache.length += input_ids.shape[1]
        return self.norm(x)


@dataclass
class KVCache:
    """Keys and values of every layer, preallocated for ``max_len`` positions."""

    keys: list[torch.Tensor]  # per layer (B, KV, max_len, D)
    values: list[torch.Tensor]
    length: int = 0  # positions filled so far

    @classmethod
    def allocate(
        cls, cfg: ModelConfig, batch: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> KVCache:
        shape = (batch, cfg.kv_heads, max_len, cfg.head_dim)
        return cls(
            [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
            [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
        )
