"""The optimizer of a run and the parameter groups it updates.

AdamW (Loshchilov & Hutter 2019) with decoupled weight decay on weight matrices only: norm
gains (and any other vector) are not decayed, as in GPT-2, nanoGPT and Llama's recipes.
"""

from __future__ import annotations

import torch

from lmablate.config.run import TrainConfig


def build_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (ndim >= 2) only, never on norm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        fused=device.type == "cuda",  # one kernel for the whole update on GPUs
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group follows the schedule (no per-group multipliers yet)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
