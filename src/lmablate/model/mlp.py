"""The feed-forward block.

``swiglu`` (Shazeer 2020, "GLU Variants Improve Transformer"; Llama) is down(silu(gate x) * up x).
``silu`` is the plain two-matrix MLP down(silu(up x)) that the reference study used; it has no
Llama equivalent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmablate.config.run import ModelConfig


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gated = cfg.mlp == "swiglu"
        if self.gated:
            self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        # while decoding, one product for gate and up (weights concatenated); see generation.py
        self.gate_up_proj: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        if self.gated:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.silu(self.up_proj(x)))
