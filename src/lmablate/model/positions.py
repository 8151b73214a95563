"""Positions: rotary embeddings (Su et al. 2021, "RoFormer"), whole or partial.

The "rotate-half" layout of the Hugging Face Llama implementation: the first and second halves
of the rotated dimensions are the rotated pairs, not interleaved even/odd dimensions, so
exported weights need no permutation. Partial rotary (GPT-NeoX ``rotary_pct``) rotates the
first ``rotary_dims`` dimensions of each head, with frequencies over those dimensions alone, and
passes the rest through.

``positions`` names a ``Positions`` module from the registry: ``rope`` gives attention its
cos/sin tables, ``learned`` adds a learned embedding of each position to the tokens (GPT-2),
``nope`` does neither (causal masking alone).
"""

from __future__ import annotations

import torch
from torch import nn

from lmablate.config.run import ModelConfig


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables in float32 for integer positions: (T,) -> (T, D); (B, T) ->
    (B, 1, T, D), which broadcasts over heads (each sequence its own positions)."""
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
    inv_freq = 1.0 / (theta ** (exponents / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # (..., T, D / 2)
    angles = torch.cat((freqs, freqs), dim=-1)  # rotate-half layout: both halves share a freq
    if angles.dim() == 3:
        angles = angles.unsqueeze(1)  # (B, 1, T, D)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) queries or keys; cos/sin are (T, D) or (B, 1, T, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def apply_partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` dimensions of each head, pass the rest through."""
    dims = cos.shape[-1]
    if dims == x.shape[-1]:
        return apply_rope(x, cos, sin)
    return torch.cat((apply_rope(x[..., :dims], cos, sin), x[..., dims:]), dim=-1)


class Positions(nn.Module):
    """Where a token is, told to the model: rotary tables for attention, an embedding added to
    the tokens, or neither. ``positions`` are integer positions, (T,) or (B, T)."""

    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None

    def embedding(self, positions: torch.Tensor) -> torch.Tensor | None:
        return None


class Rotary(Positions):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dims, self.theta = cfg.rotary_dims, cfg.rope_theta

    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_cos_sin(positions, self.dims, self.theta)


class Learned(Positions):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.max_positions = cfg.max_positions
        self.table = nn.Embedding(cfg.max_positions, cfg.d_model)

    def embedding(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table(positions)  # (T, d_model) or (B, T, d_model)


def rope(cfg: ModelConfig) -> Positions:
    return Rotary(cfg)


def nope(cfg: ModelConfig) -> Positions:
    return Positions()


def learned(cfg: ModelConfig) -> Positions:
    return Learned(cfg)
