"""Normalization layers.

RMSNorm (Zhang & Sennrich 2019) computed in float32 and cast back before the weight multiply,
as Llama does: in bf16 the mean of squares underflows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
