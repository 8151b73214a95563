"""Causal self-attention: separate q/k/v/o projections (Llama's names; biases with
``model.bias``), grouped-query attention via ``n_kv_heads``, an optional KV cache for decoding,
and the ablations of ``model``: QK-norm (per-head RMSNorm of queries and keys before the
rotation, as Qwen3), whole or partial rotary positions, a sliding window, attention dropout,
and under ``parametrization: mup`` the 1 / head_dim scale of Yang et al. 2022."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmablate.config.run import ModelConfig
from lmablate.model.norms import RMSNorm
from lmablate.model.positions import apply_partial_rope


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, window: int | None = None) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=cfg.bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=cfg.bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=cfg.bias)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.window = window  # None: every earlier position; W: the last W positions
        self.dropout = cfg.attention_dropout
        self.scale = cfg.attention_scale  # None: 1 / sqrt(head_dim); mup: 1 / head_dim scaling
        # while decoding, one product for q, k and v (weights concatenated); see generation.py
        self.qkv_proj: nn.Module | None = None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor | None,
        sin: torch.Tensor | None,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        start: int = 0,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``cos``/``sin`` are None without rotary positions; ``mask`` (B, 1, T, keys) is True
        where a query may attend; ``start`` is the position of x's first token in the cache."""
        batch, seq, _ = x.shape
        if self.qkv_proj is None:
            q = self.q_proj(x).view(batch, seq, self.n_heads, self.head_dim)
            k = self.k_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim)
            v = self.v_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim)
        else:
            kv = self.n_kv_heads * self.head_dim
            q, k, v = self.qkv_proj(x).split((self.n_heads * self.head_dim, kv, kv), dim=-1)
            q = q.view(batch, seq, self.n_heads, self.head_dim)
            k = k.view(batch, seq, self.n_kv_heads, self.head_dim)
            v = v.view(batch, seq, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # over each head's dimensions
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|KV, T, D)
        if cos is not None and sin is not None:
            q, k = apply_partial_rope(q, cos, sin), apply_partial_rope(k, cos, sin)
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
        if self.window is not None:
            mask = self._within_window(mask, start, seq, k.shape[2], x.device)
        dropout = self.dropout if self.training else 0.0
        if mask is None:  # (B, H, T, D)
            out = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=dropout, scale=self.scale
            )
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, scale=self.scale
            )
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))

    def _within_window(
        self, mask: torch.Tensor | None, start: int, seq: int, keys: int, device: torch.device
    ) -> torch.Tensor:
        """Causal attention to the last ``window`` positions (a query sees itself and the
        window - 1 before it), combined with ``mask``."""
        queries = torch.arange(start, start + seq, device=device)[:, None]
        key_index = torch.arange(keys, device=device)[None, :]
        band = (key_index <= queries) & (queries - key_index < self.window)  # (T, keys)
        return band if mask is None else mask & band


def causal(cfg: ModelConfig, window: int | None) -> Attention:
    return Attention(cfg, window)
