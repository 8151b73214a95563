"""The optimizer of a run and the parameter groups it updates.

Every parameter belongs to one of four groups, each with its own learning-rate multiplier and
weight decay (``TrainConfig``'s ``*_lr_mult`` and ``*_weight_decay``):

- ``embeddings``: every ``nn.Embedding`` weight (tokens, learned positions), and the LM head
  when it is tied to the token embedding;
- ``head``: the LM head's weight when it is not tied;
- ``matrices``: every other weight of two or more dimensions (attention and MLP projections);
- ``scalars``: everything of one dimension or none (norm gains, biases); not decayed by default,
  as in GPT-2, nanoGPT and Llama's recipes.

The optimizers:

- ``adamw``: ``torch.optim.AdamW`` (Loshchilov & Hutter 2019) over all four groups.
- ``muon``: Muon (Jordan et al. 2024; ``rules.Muon``, ``torch.optim.Muon``'s update with its
  Newton-Schulz iteration in bfloat16 on GPUs and float32 on CPUs) on the matrices, which are
  what it is designed for; AdamW on embeddings, head and scalars, as its authors train with it.
- ``lion``: ``rules.Lion`` (Chen et al. 2023).
- ``sgd``: ``torch.optim.SGD`` with momentum, optionally Nesterov.

``set_learning_rate`` gives every group the schedule's value times its multiplier.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lmablate.config.run import TrainConfig
from lmablate.errors import ConfigError
from lmablate.optim.rules import Lion, Muon

GROUPS = ("embeddings", "head", "matrices", "scalars")


def parameter_roles(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Each trainable parameter, by name, in its group (see the module docstring); a group
    with no parameters (the head, when tied) is an empty list."""
    embedding_ids = {
        id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)
    }
    head = getattr(model, "lm_head", None)
    head_id = id(head.weight) if head is not None else None
    roles: dict[str, list[tuple[str, nn.Parameter]]] = {group: [] for group in GROUPS}
    for name, param in model.named_parameters():  # a tied weight is listed once, first name
        if not param.requires_grad:
            continue
        if id(param) in embedding_ids:
            role = "embeddings"
        elif id(param) == head_id:
            role = "head"
        elif param.ndim >= 2:
            role = "matrices"
        else:
            role = "scalars"
        roles[role].append((name, param))
    return roles


def group_settings(cfg: TrainConfig, width_mult: float = 1.0) -> dict[str, dict[str, Any]]:
    """Each group's learning-rate multiplier, weight decay and optimizer, as configured; under
    ``parametrization: mup`` (``width_mult`` m, the model's d_model over its base width) the
    matrices of an Adam-like optimizer train at the multiplier / m with weight decay x m (the
    reference ``mup`` package's MuAdam: the decoupled decay lr x wd is unchanged), the other
    groups (embeddings, head, scalars) as written. Muon's matrices are left as they are: its
    update is scaled by each matrix's shape already."""

    def decay(override: float | None) -> float:
        return cfg.weight_decay if override is None else override

    settings = {
        "embeddings": (cfg.embedding_lr_mult, decay(cfg.embedding_weight_decay)),
        "head": (cfg.head_lr_mult, decay(cfg.head_weight_decay)),
        "matrices": (cfg.matrix_lr_mult, decay(cfg.matrix_weight_decay)),
        "scalars": (cfg.scalar_lr_mult, cfg.scalar_weight_decay),
    }
    out = {}
    for group, (mult, weight_decay) in settings.items():
        optimizer = cfg.optimizer
        if cfg.optimizer == "muon" and group != "matrices":
            optimizer = "adamw"
        if group == "matrices" and optimizer in ("adamw", "lion") and width_mult != 1.0:
            mult, weight_decay = mult / width_mult, weight_decay * width_mult
        out[group] = {"lr_mult": mult, "weight_decay": weight_decay, "optimizer": optimizer}
    return out


def _width_mult(model: nn.Module) -> float:
    cfg = getattr(model, "cfg", None)
    return getattr(cfg, "width_mult", 1.0)


def describe_groups(model: nn.Module, cfg: TrainConfig) -> dict[str, dict[str, Any]]:
    """What summary.json states per group: optimizer, peak learning rate, weight decay and
    the parameters it holds (names and count), so no reader has to reconstruct them."""
    roles, settings = parameter_roles(model), group_settings(cfg, _width_mult(model))
    out = {}
    for group in GROUPS:
        named = roles[group]
        if not named:
            continue
        row = settings[group]
        out[group] = {
            "optimizer": row["optimizer"],
            "peak_lr": cfg.learning_rate * row["lr_mult"],
            "lr_mult": row["lr_mult"],
            "weight_decay": row["weight_decay"],
            "parameters": sum(p.numel() for _, p in named),
            "tensors": len(named),
        }
    return out


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> Optimizers:
    """The run's optimizer(s) over the four parameter groups (empty groups left out)."""
    roles, settings = parameter_roles(model), group_settings(cfg, _width_mult(model))
    by_optimizer: dict[str, list[dict[str, Any]]] = {}
    for group in GROUPS:
        if roles[group]:
            row = settings[group]
            by_optimizer.setdefault(row["optimizer"], []).append(
                {
                    "params": [p for _, p in roles[group]],
                    "name": group,
                    "lr_mult": row["lr_mult"],
                    "lr": cfg.learning_rate * row["lr_mult"],
                    "weight_decay": row["weight_decay"],
                }
            )
    return Optimizers([_make(kind, groups, cfg, device) for kind, groups in by_optimizer.items()])


def _make(
    kind: str, groups: list[dict[str, Any]], cfg: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    if kind == "adamw":
        return torch.optim.AdamW(
            groups,
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_eps,
            fused=device.type == "cuda",  # one kernel for the whole update on GPUs
        )
    if kind == "muon":
        return Muon(
            groups,
            lr=cfg.learning_rate,
            momentum=cfg.muon_momentum,
            nesterov=cfg.muon_nesterov,
            ns_steps=cfg.muon_ns_steps,
            adjust_lr=cfg.muon_adjust_lr,
            # bfloat16 products are fast on GPUs, slow on CPUs without bfloat16 units
            ns_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
        )
    if kind == "lion":
        return Lion(groups, lr=cfg.learning_rate, betas=(cfg.lion_beta1, cfg.lion_beta2))
    if kind == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.learning_rate, momentum=cfg.sgd_momentum, nesterov=cfg.sgd_nesterov
        )
    raise ConfigError(f"unknown optimizer {kind!r}")


class Optimizers:
    """One optimizer, or several over disjoint groups (Muon and AdamW), stepped as one.

    It has what the loop, ``GradScaler`` and checkpoints use: ``param_groups`` (every group of
    every optimizer, the same dicts, so a learning rate set here is the one they use),
    ``step``, ``zero_grad``, ``state_dict`` and ``load_state_dict``.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    @property
    def state(self) -> dict[torch.Tensor, Any]:
        return {k: v for optimizer in self.optimizers for k, v in optimizer.state.items()}

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kinds": [type(optimizer).__name__ for optimizer in self.optimizers],
            "optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kinds = [type(optimizer).__name__ for optimizer in self.optimizers]
        if state.get("kinds") != kinds:
            saved = state.get("kinds", "an older lmablate's single AdamW with two groups")
            raise ConfigError(
                f"the checkpoint holds optimizer state of {saved}, this run builds {kinds}: it "
                "cannot resume from it (train it again, or resume with the version that wrote it)"
            )
        for optimizer, saved_state in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved_state)


def set_learning_rate(optimizer: Optimizers | torch.optim.Optimizer, lr: float) -> None:
    """Every group at the schedule's ``lr`` times its multiplier."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
