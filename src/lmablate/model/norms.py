"""Normalization layers, built by name from the norm registry (``config/components.py``).

RMSNorm (Zhang & Sennrich 2019) computed in float32 and cast back before the weight multiply,
as Llama does: in bf16 the mean of squares underflows. LayerNorm (Ba et al. 2016) is
``torch.nn.LayerNorm`` (float32 under autocast), with a bias only when ``model.bias`` is on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmablate.config.components import NORMS
from lmablate.config.run import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # the same arithmetic in one fused operation
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # float32 statistics even under autocast, as in Llama (bf16 variance underflows)
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rmsnorm(dim: int, cfg: ModelConfig) -> nn.Module:
    return RMSNorm(dim, cfg.norm_eps)


def layernorm(dim: int, cfg: ModelConfig) -> nn.Module:
    return nn.LayerNorm(dim, eps=cfg.norm_eps, bias=cfg.bias)


def build_norm(dim: int, cfg: ModelConfig) -> nn.Module:
    """The norm ``cfg.norm`` names, over the last ``dim`` features."""
    return NORMS.builder(cfg.norm)(dim, cfg)
