"""Causal self-attention: separate q/k/v/o projections without biases (Llama's names),
rotary positions on queries and keys, grouped-query attention via ``n_kv_heads``, and an
optional KV cache for decoding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmablate.config.run import ModelConfig
from lmablate.model.positions import apply_rope


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        # while decoding, one product for q, k and v (weights concatenated); see generation.py
        self.qkv_proj: nn.Module | None = None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        start: int = 0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, seq, _ = x.shape
        if self.qkv_proj is None:
            q = self.q_proj(x).view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)
            k = self.k_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
            v = self.v_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, H, T, D), (B, KV, T, D)
        else:  # rotate queries and keys together, heads on dim 2: (B, T, H + KV, D)
            heads = self.n_heads + self.n_kv_heads
            qkv = self.qkv_proj(x)
            qk = qkv[..., : heads * self.head_dim].view(batch, seq, heads, self.head_dim)
            qk = apply_rope(qk, cos.transpose(-2, -3), sin.transpose(-2, -3)).transpose(1, 2)
            q, k = qk.split((self.n_heads, self.n_kv_heads), dim=1)
            v = qkv[..., heads * self.head_dim :].view(batch, seq, self.n_kv_heads, self.head_dim)
            v = v.transpose(1, 2)
        if cache is not None:  # append this step's keys and values; attend over all so far
            keys, values = cache  # (B, KV, T_max, D)
            keys[:, :, start : start + seq] = k
            values[:, :, start : start + seq] = v
            k, v = keys[:, :, : start + seq], values[:, :, : start + seq]
        if self.n_kv_heads != self.n_heads:
            # each kv head serves n_heads / n_kv_heads consecutive query heads, as in Llama
            repeats = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(repeats, dim=1)
            v = v.repeat_interleave(repeats, dim=1)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        else:  # (B, 1, T, T_keys), True where a query may attend
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))
