"""Positions: rotary embeddings (Su et al. 2021, "RoFormer"), whole or partial.

The "rotate-half" layout of the Hugging Face Llama implementation: the first and second halves
of the rotated dimensions are the rotated pairs, not interleaved even/odd dimensions, so
exported weights need no permutation. Partial rotary (GPT-NeoX ``rotary_pct``) rotates the
first ``rotary_dims`` dimensions of each head, with frequencies over those dimensions alone, and
passes the rest through. ``positions: learned`` (an embedding table) lives in the LM, and
``nope`` is the absence of both.
"""

from __future__ import annotations

import torch


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
