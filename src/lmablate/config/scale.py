"""The scale axis of a study (``scale:``): every configuration trained at several model sizes.

A size is either multipliers of each configuration's own shape (``width`` scales d_model, d_ff,
n_heads and n_kv_heads, so the head dimension stays fixed; ``depth`` scales n_layers) or an
explicit shape (``model: {d_model: ..., n_layers: ...}``) that replaces those fields. The
written shape is the reference size: a size that resolves to it is the configuration itself,
and when no size does, the reference is trained anyway (it is the study's baseline). Every
other size of configuration ``C`` is an ordinary variant named ``C,size=NAME`` (the baseline's
``size=NAME``), so statistics, resume and export work for it as for any run.

The token budget follows the size as ``tokens`` says: ``fixed`` (every size trains the written
max_steps) or ``per_parameter`` (training tokens proportional to the parameter count: at
``tokens_per_parameter`` when given, else at the reference size's own ratio, so the written
size keeps its budget). Parameters are the model's total count (embedding and head included,
as Chinchilla's tokens-per-parameter counts them); they need the tokenizer's vocabulary, so
the steps are set once the data is prepared (``study.budgets.scale_budgets``). No torch.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lmablate.config.fields import PosFloat, Section

SHAPE_FIELDS = ("d_model", "n_heads", "n_kv_heads", "n_layers", "d_ff")
REFERENCE = "reference"  # the name of the written shape when no listed size resolves to it


class SizeConfig(Section):
    """One model size: multipliers of each configuration's shape, or an explicit shape."""

    name: str | None = Field(
        None,
        description="The size's name in run names (C,size=NAME); default: from its "
        "multipliers (w2, w0.5d2) or its shape (d256L4).",
    )
    width: PosFloat | None = Field(
        None,
        description="Multiplier of d_model, d_ff, n_heads and n_kv_heads (head dimension "
        "fixed); each must come out a whole number.",
    )
    depth: PosFloat | None = Field(None, description="Multiplier of n_layers.")
    model: dict[str, int] | None = Field(
        None,
        description="An explicit shape (any of d_model, n_heads, n_kv_heads, n_layers, d_ff) "
        "that replaces those fields of every configuration; instead of width/depth.",
    )

    @field_validator("model")
    @classmethod
    def _shape_only(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is not None:
            other = sorted(set(value) - set(SHAPE_FIELDS))
            if other:
                raise ValueError(
                    f"model: {', '.join(other)} not a shape field; a size sets only "
                    f"{', '.join(SHAPE_FIELDS)} (other changes are variants)"
                )
            if not value:
                raise ValueError("model: name at least one shape field")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> SizeConfig:
        if self.model is not None and (self.width is not None or self.depth is not None):
            raise ValueError("give a size either model: (a shape) or width/depth, not both")
        if self.model is None and self.width is None and self.depth is None:
            raise ValueError("a size needs width, depth or model (e.g. {width: 2})")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.model is not None:
            m = self.model
            parts = [f"d{m['d_model']}" if "d_model" in m else ""]
            parts.append(f"L{m['n_layers']}" if "n_layers" in m else "")
            parts.append(f"ff{m['d_ff']}" if "d_ff" in m else "")
            parts.append(f"h{m['n_heads']}" if "n_heads" in m else "")
            return "".join(parts) or "shape"
        return (f"w{self.width:g}" if self.width is not None else "") + (
            f"d{self.depth:g}" if self.depth is not None else ""
        )


class ScaleConfig(Section):
    """``scale:`` in a study."""

    sizes: list[SizeConfig] = Field(
        min_length=1,
        description="Model sizes every configuration trains at (the written shape is the "
        "reference size and always trains).",
    )
    tokens: Literal["fixed", "per_parameter"] = Field(
        "fixed",
        description="How the token budget follows the size: fixed (the written max_steps at "
        "every size) or per_parameter (tokens proportional to total parameters).",
    )
    tokens_per_parameter: PosFloat | None = Field(
        None,
        description="With tokens: per_parameter, training tokens per parameter at every size "
        "(e.g. 20); null: the reference size's own ratio, so it keeps its written budget.",
    )

    @model_validator(mode="after")
    def _ratio_needs_per_parameter(self) -> ScaleConfig:
        if self.tokens_per_parameter is not None and self.tokens != "per_parameter":
            raise ValueError(
                "tokens_per_parameter is read only with tokens: per_parameter; set both, or "
                "leave tokens_per_parameter out"
            )
        labels = [size.label for size in self.sizes]
        repeated = sorted({name for name in labels if labels.count(name) > 1})
        if repeated:
            raise ValueError(f"sizes: {', '.join(repeated)} named twice; name each size once")
        return self


def resized(model: dict[str, Any], size: SizeConfig) -> dict[str, Any]:
    """The shape fields of ``model`` (a configuration's resolved model section) at ``size``.
    Raises ValueError when a multiplier does not give whole numbers."""
    if size.model is not None:
        return dict(size.model)
    out: dict[str, Any] = {}
    if size.width is not None:
        for key in ("d_model", "d_ff", "n_heads", "n_kv_heads"):
            if model.get(key) is None:
                continue
            value = model[key] * size.width
            if not math.isclose(value, round(value)) or round(value) < 1:
                raise ValueError(
                    f"width {size.width:g} makes {key} {model[key]} x {size.width:g} = "
                    f"{value:g}, not a whole number; choose a width that divides it, or give "
                    "the shape (model: {...})"
                )
            out[key] = round(value)
    if size.depth is not None:
        layers = model["n_layers"] * size.depth
        if not math.isclose(layers, round(layers)) or round(layers) < 1:
            raise ValueError(
                f"depth {size.depth:g} makes n_layers {model['n_layers']} x {size.depth:g} = "
                f"{layers:g}, not a whole number of layers"
            )
        out["n_layers"] = round(layers)
    return out


def size_variant(config: str, size: str) -> str:
    """The variant name of configuration ``config`` at size ``size``."""
    return f"size={size}" if config == "baseline" else f"{config},size={size}"
