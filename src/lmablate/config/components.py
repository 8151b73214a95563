"""Registries of model components: a family (``norm``, ``mlp``, ``attention``, ``positions``)
maps names to builders.

A component is a name in the config and a builder in ``lmablate.model``. The registries live
here, in the config layer and without torch, so that a config names a component and is checked
("did you mean ...?") before anything is built, and ``lmablate config --reference`` lists what
each name means. The built-ins register through the same ``register`` call as a user's own
module; their builders are given as ``"module:attribute"`` strings, imported when first built.

A user's component, from Python, before the study is loaded::

    import lmablate.model
    lmablate.model.register("mlp", "squared_gelu", MyMLP, "down(gelu(up x)^2)")

``MyMLP(cfg)`` (or any callable ``builder(cfg) -> nn.Module``) receives the ``ModelConfig``.
What each family builds and computes:

- ``mlp``: ``builder(cfg)``; (B, T, d_model) -> (B, T, d_model).
- ``norm``: ``builder(dim, cfg)``; normalizes the last ``dim`` features.
- ``attention``: ``builder(cfg, window)``; ``forward(x, cos, sin, cache=None, start=0,
  mask=None)`` as ``lmablate.model.attention.Attention`` (keys and values of
  ``cfg.kv_heads`` x ``cfg.head_dim`` in the KV cache while decoding).
- ``positions``: ``builder(cfg)``; a ``lmablate.model.positions.Positions`` whose
  ``rotary(positions)`` gives cos/sin tables for attention and ``embedding(positions)`` a
  (..., d_model) tensor added to the token embeddings (either may be None).

A registered component exists only in the process that registered it: runs launched in their
own processes (``--parallel``, torchrun, Ray) cannot name it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmablate.errors import ConfigError, suggest


@dataclass(frozen=True)
class Component:
    name: str
    description: str
    builder: Callable[..., Any] | str  # "module:attribute" for the built-ins
    builtin: bool = False


class Registry:
    """Names of one component family and how to build each."""

    def __init__(self, family: str) -> None:
        self.family = family
        self.entries: dict[str, Component] = {}

    def add(
        self, name: str, builder: Callable[..., Any] | str, description: str, builtin: bool
    ) -> None:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{self.family} name {name!r}: use letters, digits, _ and -")
        if name in self.entries and self.entries[name].builtin:
            raise ConfigError(f"{self.family} {name!r} is built in; register under another name")
        self.entries[name] = Component(name, description, builder, builtin)

    def names(self) -> list[str]:
        return list(self.entries)

    def check(self, name: str, where: str | None = None) -> str:
        """``name`` if registered, else a ValueError naming the valid ones."""
        if name in self.entries:
            return name
        valid = ", ".join(self.entries)
        raise ValueError(
            f"{where or f'model.{self.family}'}: unknown {self.family} {name!r}"
            f"{suggest(name, self.entries)} (registered: {valid})"
        )

    def builder(self, name: str) -> Callable[..., Any]:
        builder = self.entries[name].builder
        if isinstance(builder, str):
            module, _, attribute = builder.partition(":")
            builder = getattr(importlib.import_module(module), attribute)
        return builder

    def reference(self) -> str:
        return "; ".join(f"`{c.name}`: {c.description}" for c in self.entries.values())


NORMS = Registry("norm")
MLPS = Registry("mlp")
ATTENTION = Registry("attention")
POSITIONS = Registry("positions")
REGISTRIES = {"norm": NORMS, "mlp": MLPS, "attention": ATTENTION, "positions": POSITIONS}
# filters of training documents: ``keep(text) -> bool``, named in data.filters.keep
FILTERS = Registry("filter")


def register(family: str, name: str, builder: Callable[..., Any], description: str) -> None:
    """Make ``name`` a valid value of ``model.<family>`` in this process."""
    if family not in REGISTRIES:
        raise ConfigError(f"no component family {family!r}; families: {', '.join(REGISTRIES)}")
    REGISTRIES[family].add(name, builder, description, builtin=False)


def register_filter(name: str, keep: Callable[[str], bool], description: str) -> None:
    """Make ``name`` a valid entry of ``data.filters.keep`` in this process: a training document
    is kept when ``keep(text)`` is true."""
    if not callable(keep):
        raise ConfigError(f"filter {name!r}: keep must be a function of the text, not {keep!r}")
    FILTERS.add(name, keep, description, builtin=False)


for _name, _description in (
    ("rmsnorm", "x / rms(x) * g, statistics in float32 (Llama, Qwen3; Zhang & Sennrich 2019)"),
    ("layernorm", "(x - mean) / std * g + b, no b without model.bias (GPT-2, GPT-NeoX)"),
):
    NORMS.add(_name, f"lmablate.model.norms:{_name}", _description, builtin=True)
for _name, _description in (
    ("swiglu", "down(silu(gate x) * up x), gated (Llama; Shazeer 2020)"),
    ("geglu", "down(gelu(gate x) * up x), gated (Shazeer 2020; Gemma)"),
    ("silu", "down(silu(up x)), the reference study's plain MLP"),
    ("gelu", "down(gelu(up x)), exact GELU (GPT-2, GPT-NeoX)"),
    ("relu2", "down(relu(up x)^2), ReLU squared (So et al. 2021, Primer)"),
):
    MLPS.add(_name, f"lmablate.model.mlp:{_name}", _description, builtin=True)
ATTENTION.add(
    "causal",
    "lmablate.model.attention:causal",
    "softmax(q k^T / sqrt(head_dim)) v over earlier positions (scaled_dot_product_attention), "
    "with qk_norm, sliding_window and attention_dropout as set",
    builtin=True,
)
for _name, _description in (
    (
        "rope",
        "rotary embeddings of queries and keys (Su et al. 2021), rotary_fraction of each head",
    ),
    ("nope", "none; causal masking alone (Kazemnejad et al. 2023)"),
    ("learned", "a learned absolute embedding of max_positions rows added to the tokens (GPT-2)"),
):
    POSITIONS.add(_name, f"lmablate.model.positions:{_name}", _description, builtin=True)
FILTERS.add(
    "gopher",
    "lmablate.data.filters:gopher",
    "the Gopher quality rules (Rae et al. 2021, appendix A.1.1): 50 to 100,000 words, mean word "
    "length 3 to 10 characters, under 0.1 '#' or '...' per word, at most 90% of lines starting "
    "with a bullet and 30% ending in '...', at least 80% of words with a letter",
    builtin=True,
)
