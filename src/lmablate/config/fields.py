"""Field types shared by the config sections: strict integers with stated upper bounds,
seeds, and the frozen, closed base of every section. No torch."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

# Integers are strict (a YAML 3.5 or "12" for a layer count is a mistake, not a conversion);
# floats stay lax because PyYAML reads ``1e-4`` (no dot) as a string.
PosInt = Annotated[int, Field(gt=0, strict=True)]
NonNegInt = Annotated[int, Field(ge=0, strict=True)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
# Upper bounds on sizes and counts, each with why: a typo (an extra few zeros) fails here in
# milliseconds instead of allocating for minutes (keys.format_validation_error adds the reason).
LIMITS: dict[str, tuple[int, str]] = {
    "d_model": (2**16, "wider than any model this tool can train in memory"),
    "n_heads": (2**12, "more heads than any d_model here can divide usefully"),
    "n_kv_heads": (2**12, "more heads than any d_model here can divide usefully"),
    "n_layers": (2**12, "deeper than any published transformer LM by an order of magnitude"),
    "d_ff": (2**18, "an MLP wider than any model this tool can train in memory"),
    "vocab_size": (2**22, "a larger output layer than any tokenizer needs"),
    "max_positions": (2**22, "a longer position table than any context trained here"),
    "sliding_window": (2**22, "a window longer than any context trained here"),
    "global_every": (2**12, "more than the layers a model may have"),
    "batch_size": (2**20, "more sequences per step than fit any device"),
    "seq_len": (2**22, "a longer context than fits any device"),
    "max_steps": (10**9, "a billion optimizer steps"),
    "warmup_steps": (10**9, "a billion optimizer steps"),
    "muon_ns_steps": (99, "torch.optim.Muon refuses 100 or more Newton-Schulz steps"),
    "grad_accum_steps": (2**20, "more micro-batches than any batch_size allowed"),
    "eval_every": (10**9, "a billion optimizer steps"),
    "eval_tokens": (2**34, "more validation targets than a token cache holds"),
    "log_every": (10**9, "a billion optimizer steps"),
    "checkpoint_every": (10**9, "a billion optimizer steps"),
    "num_documents": (10**10, "more documents than any corpus this tool reads"),
}


def bounded(field: str, zero: bool = False) -> object:
    """A strict int above 0 (or from 0) up to the field's limit."""
    low = {"ge": 0} if zero else {"gt": 0}
    return Annotated[int, Field(**low, le=LIMITS[field][0], strict=True)]


SEED_MAX = 2**63 - 1  # torch and numpy take seeds up to a signed 64-bit integer
Seed = Annotated[int, Field(ge=0, le=SEED_MAX, strict=True)]


def _boolean_for_number(value: Any, annotation: Any) -> bool:
    """Whether ``value`` holds a boolean where ``annotation`` takes only numbers (pydantic's
    lax floats read ``true`` as 1.0, so ``z_loss: true`` would silently mean a coefficient)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is bool or isinstance(annotation, typing.TypeVar):
        return False
    if origin is Annotated:
        return _boolean_for_number(value, args[0])
    if origin in (Union, types.UnionType):
        return all(_boolean_for_number(value, arg) for arg in args if arg is not type(None))
    if origin is Literal:  # pydantic names the choices itself
        return False
    if isinstance(value, bool):
        return annotation in (int, float)
    if origin in (list, tuple) and isinstance(value, list | tuple) and args:
        items = args[:1] * len(value) if origin is list or args[-1] is Ellipsis else args
        return any(_boolean_for_number(v, a) for v, a in zip(value, items, strict=False))
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return any(_boolean_for_number(v, args[1]) for v in value.values())
    return False


class Section(BaseModel):
    """The base of every config model: closed, frozen, finite, and a boolean is never read as
    a number."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if _boolean_for_number(value, cls.model_fields[info.field_name].annotation):
            raise PydanticCustomError("bool_for_number", "expected a number, not true/false")
        return value


def looks_like_path(value: str) -> bool:
    """A tokenizer spec meant as a file system path rather than a hub id."""
    return value.startswith((".", "/", "~")) or value.endswith(".json")


def divisors(n: int, even_quotient: bool = False) -> list[int]:
    """The divisors of n (``even_quotient``: only those leaving an even quotient), for messages
    that say which values would be valid."""
    return [k for k in range(1, n + 1) if n % k == 0 and not (even_quotient and (n // k) % 2)]
