"""Settings a resolved run config never reads: an optimizer's own settings under another
optimizer, a schedule's under another schedule, a tied head's, an unused position table's.
Written by the user, each one would train a run that differs from another only on paper, so
the commands that read user configs (``train``, a study's baseline and variants) refuse them.
No torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from lmablate.config.run import ModelConfig, RunConfig
from lmablate.errors import ConfigError

# (fields, why they are unread in this config or None)
Rule = tuple[tuple[str, ...], Callable[[RunConfig], str | None]]


def _optimizer(name: str) -> Callable[[RunConfig], str | None]:
    def why(config: RunConfig) -> str | None:
        used = config.train.optimizer
        return None if used == name else f"read only with optimizer: {name} (this one is {used})"

    return why


RULES: list[Rule] = [
    (("muon_momentum", "muon_nesterov", "muon_ns_steps", "muon_adjust_lr"), _optimizer("muon")),
    (("lion_beta1", "lion_beta2"), _optimizer("lion")),
    (("sgd_momentum", "sgd_nesterov"), _optimizer("sgd")),
    (
        ("adam_beta1", "adam_beta2", "adam_eps"),
        lambda c: (
            f"read only by AdamW (optimizer adamw, or muon's AdamW groups; this one is "
            f"{c.train.optimizer})"
            if c.train.optimizer in ("lion", "sgd")
            else None
        ),
    ),
    (
        ("decay_fraction", "decay_shape"),
        lambda c: (
            None
            if c.train.schedule == "wsd"
            else f"read only with schedule: wsd (this one is {c.train.schedule})"
        ),
    ),
    (
        ("min_lr_ratio",),
        lambda c: "a constant schedule never decays" if c.train.schedule == "constant" else None,
    ),
    (
        ("head_lr_mult", "head_weight_decay"),
        lambda c: (
            "the head is the embedding (tie_embeddings: true), so it trains with the "
            "embedding's settings (embedding_lr_mult, embedding_weight_decay)"
            if c.model.tie_embeddings
            else None
        ),
    ),
    (
        ("max_positions",),
        lambda c: (
            None
            if c.model.positions == "learned"
            else f"read only with positions: learned (this one is {c.model.positions})"
        ),
    ),
    (
        ("rope_theta",),
        lambda c: (
            None
            if c.model.positions == "rope"
            else f"read only with positions: rope (this one is {c.model.positions})"
        ),
    ),
    (
        ("wandb_project",),
        lambda c: None if c.train.logger == "wandb" else "read only with logger: wandb",
    ),
]


def unread_settings(config: RunConfig, fields: Iterable[str]) -> list[str]:
    """A message for each of ``fields`` (flat names) that ``config`` never reads."""
    fields = set(fields)
    problems = []
    for names, why in RULES:
        reason = why(config) if fields.intersection(names) else None
        if reason:
            problems += [
                f"{name} does not take effect: {reason}" for name in names if name in fields
            ]
    return problems


def written_fields(config: RunConfig) -> set[str]:
    """The flat names of the fields a freshly validated config was given."""
    return {
        *config.model.model_fields_set,
        *config.train.model_fields_set,
        *config.data.model_fields_set,
    }


def check_positions(cfg: ModelConfig, max_new_tokens: int, what: str = "--max-new-tokens") -> None:
    """A learned position table has no row past ``max_positions``: a prompt token and the
    first ``max_new_tokens - 1`` new ones are fed back, so that many positions must exist
    (rope and NoPE compute any position)."""
    if cfg.positions == "learned" and max_new_tokens > cfg.max_positions:
        raise ConfigError(
            f"{what} {max_new_tokens}: the model's learned positions stop at "
            f"{cfg.max_positions} (model.max_positions), so at most {cfg.max_positions} new "
            "tokens fit after a prompt; ask for fewer"
        )


# fields (dotted paths of a run config) that document or watch a run and never change what it
# trains: a change to one is no new configuration (a variant must change something else), and
# a finished run whose config differs only there is resumed, not retrained
NOT_TRAINED = frozenset({"description", "train.logger", "train.wandb_project"})


def trained_part(config: dict) -> dict:
    """A resolved run config (``model_dump``) without the ``NOT_TRAINED`` fields."""
    out = {k: v for k, v in config.items() if k not in NOT_TRAINED}
    for section, value in config.items():
        if isinstance(value, dict):
            out[section] = {k: v for k, v in value.items() if f"{section}.{k}" not in NOT_TRAINED}
    return out
