"""The language model: a decoder-only transformer, Llama-compatible by construction.

Token embedding -> ``n_layers`` pre-norm blocks -> final RMSNorm -> LM head (tied to the
embedding by default). Each block is ``x = x + attn(attn_norm(x)); x = x + mlp(mlp_norm(x))``.

Choices that keep it interchangeable with ``transformers.LlamaForCausalLM`` (a test checks logit
parity on a tiny config), each in its component's file:
- RMSNorm computed in float32 and cast back before the weight multiply, as Llama does
  (``norms.py``).
- Rotary embeddings in the "rotate-half" layout of the Hugging Face implementation (the first
  and second halves of each head are the rotated pairs, not interleaved even/odd dimensions;
  ``positions.py``).
- Separate q/k/v/o projections with no biases; grouped-query attention via ``n_kv_heads``
  (``attention.py``).

Deliberate additions beyond Llama: ``mlp: silu``, a plain two-matrix MLP down(silu(up x)), the
form the reference study used; it has no Llama equivalent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmablate.config.run import ModelConfig
from lmablate.model.attention import Attention
from lmablate.model.loss import head_cross_entropy
from lmablate.model.mlp import MLP
from lmablate.model.norms import RMSNorm
from lmablate.model.positions import rope_cos_sin


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, **attn
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, **attn)
        return x + self.mlp(self.mlp_norm(x))


class LM(nn.Module):
    """Maps token ids (B, T) to next-token logits (B, T, vocab_size)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, init_std) for every weight matrix, ones for norms; seed torch first to fix it."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits: ``model(ids)``, causal over 0..T-1. Training: ``model(ids, targets=...)``
        returns the mean cross-entropy instead, without materializing the logits (loss.py).
        Decoding: per-sequence ``positions`` (B, T), a ``cache`` that this call extends, and an
        attention ``mask`` (B, 1, T, keys)."""
        hidden = self.hidden_states(input_ids, positions, cache, mask)
        if targets is not None:
            return head_cross_entropy(hidden, self.lm_head.weight, targets)
        return self.lm_head(hidden)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final normalized hidden states (B, T, d_model): the LM head's input."""
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta)
        x = self.embed(input_ids)  # (B, T, d_model)
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
