"""Update rules that ``torch.optim`` lacks, or whose speed on a CPU it does not serve:

- ``Lion`` (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms");
- ``Muon`` (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks"),
  the update of ``torch.optim.Muon`` with the Newton-Schulz iteration in a chosen precision:
  ``torch.optim.Muon`` runs it in bfloat16, which GPUs multiply fast and CPUs without bfloat16
  units multiply slowly (an 8x slower training step at the reference shape on a 2-core EPYC;
  ``benchmarks/bench_train.py``). In bfloat16 it is ``torch.optim.Muon`` bit for bit (tested).
"""

from __future__ import annotations

import math
from typing import Any

import torch

NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)  # Jordan et al. 2024's quintic iteration
NS_EPS = 1e-7


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, Algorithm 2), per parameter with gradient g and momentum m:

        update = sign(beta1 * m + (1 - beta1) * g)
        p      = p - lr * (update + weight_decay * p)
        m      = beta2 * m + (1 - beta2) * g

    The update has unit magnitude in every coordinate, so its authors use a learning rate
    3-10x smaller than AdamW's and a weight decay 3-10x larger (the product lr * weight_decay,
    the decay actually applied, stays the same).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        if closure is not None:
            raise ValueError("Lion.step takes no closure")
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                momentum = state["exp_avg"]
                update = momentum.mul(beta1).add_(p.grad, alpha=1 - beta1).sign_()
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
                momentum.mul_(beta2).add_(p.grad, alpha=1 - beta2)


def orthogonalize(
    update: torch.Tensor, steps: int, dtype: torch.dtype = torch.bfloat16
) -> torch.Tensor:
    """Newton-Schulz iteration towards the nearest semi-orthogonal matrix (U V^T of the SVD
    U S V^T), run in ``dtype``. The quintic's coefficients trade convergence for speed: the
    singular values land near 1 (about 0.7 to 1.2), not on it (Jordan et al. 2024)."""
    a, b, c = NS_COEFFICIENTS
    x = update.to(dtype)
    tall = update.shape[0] > update.shape[1]
    if tall:
        x = x.T
    x = x.div(x.norm().clamp(min=NS_EPS))  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def muon_lr_scale(shape: torch.Size, adjust: str) -> float:
    """The per-matrix learning-rate factor: ``original``, sqrt(max(1, rows / cols)) (Jordan
    et al. 2024); ``match_rms_adamw``, 0.2 sqrt(max(rows, cols)), so the update's RMS matches
    AdamW's (Liu et al. 2025, "Muon is Scalable for LLM Training")."""
    rows, cols = shape[:2]
    if adjust == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1.0, rows / cols))


class Muon(torch.optim.Optimizer):
    """Muon on 2-D parameters, per matrix W with gradient G and momentum buffer B:

        B = momentum * B + (1 - momentum) * G
        U = orthogonalize((1 - momentum) * G + momentum * B)     (Nesterov; else U = orth(B))
        W = W * (1 - lr * weight_decay) - lr * muon_lr_scale(W) * U

    ``ns_dtype``: the precision of the Newton-Schulz iteration.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 0.02,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        adjust_lr: str = "original",
        ns_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_steps": ns_steps,
            "adjust_lr": adjust_lr,
        }
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon updates matrices only; got a {p.ndim}-D parameter")

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        if closure is not None:
            raise ValueError("Muon.step takes no closure")
        for group in self.param_groups:
            momentum, lr = group["momentum"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"]
                buffer.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = orthogonalize(update, group["ns_steps"], self.ns_dtype)
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-lr * muon_lr_scale(p.shape, group["adjust_lr"]))
