"""The feed-forward block, built by name from the MLP registry (``config/components.py``).

Gated forms (Shazeer 2020, "GLU Variants Improve Transformer") multiply an activated gate by a
linear "up" projection: ``swiglu`` (Llama) and ``geglu`` (Gemma). Plain forms apply the
activation to the up projection: ``silu`` (the reference study's MLP), ``gelu`` (GPT-2,
GPT-NeoX; the exact erf form) and ``relu2`` (ReLU squared; So et al. 2021, "Primer"). Every
form has ``up_proj`` and ``down_proj``; gated ones add ``gate_proj``, built first (so the
default model's random init is what it always was).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lmablate.config.components import MLPS
from lmablate.config.run import ModelConfig


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


class MLP(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        activation: Callable[[torch.Tensor], torch.Tensor] = F.silu,
        gated: bool = True,
    ) -> None:
        super().__init__()
        self.activation, self.gated = activation, gated
        if self.gated:
            self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        # while decoding, one product for gate and up (weights concatenated); see generation.py
        self.gate_up_proj: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(self.activation(gate) * up)
        if self.gated:
            return self.down_proj(self.activation(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.activation(self.up_proj(x)))


def swiglu(cfg: ModelConfig) -> MLP:
    return MLP(cfg, F.silu, gated=True)


def geglu(cfg: ModelConfig) -> MLP:
    return MLP(cfg, F.gelu, gated=True)


def silu(cfg: ModelConfig) -> MLP:
    return MLP(cfg, F.silu, gated=False)


def gelu(cfg: ModelConfig) -> MLP:
    return MLP(cfg, F.gelu, gated=False)


def relu2(cfg: ModelConfig) -> MLP:
    return MLP(cfg, relu_squared, gated=False)


def build_mlp(cfg: ModelConfig) -> nn.Module:
    """The MLP ``cfg.mlp`` names."""
    return MLPS.builder(cfg.mlp)(cfg)
