"""The design sections of a study file, as checked models: the text samples every run
generates (``samples:``), sweeps and their value ranges (``sweeps:``, ``tune:``) and how the
runs' budgets relate (``budget:``). No torch.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from lmablate.config.fields import Section
from lmablate.config.run import Seed
from lmablate.config.scale import ScaleConfig

MAX_RUNS = 10_000  # runs a study may expand into unless its max_runs says more
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
REFERENCE_PROMPTS = [
    "The future of artificial intelligence",
    "In a world where technology",
    "Scientists have discovered",
    "The most important lesson in life",
    "Once upon a time in a distant",
]


class SamplesConfig(Section):
    """Text that every finished run generates from the same prompts, for the report: by
    default the openings of held-out validation documents, shown beside each document's true
    continuation; ``prompts`` adds fixed prompts (``prompts: reference`` gives the reference
    report's five)."""

    documents: Annotated[int, Field(ge=0, le=64, strict=True)] = Field(
        3,
        description="Held-out validation documents whose first prompt_tokens tokens every run "
        "continues; the report shows each document's true continuation beside them (0: none).",
    )
    prompt_tokens: Annotated[int, Field(ge=1, le=1024, strict=True)] = Field(
        32, description="Tokens of each held-out document given as its prompt."
    )
    prompts: list[str] = Field(
        default_factory=list,
        description="Fixed prompts continued by every run as well ('reference': the reference "
        "report's five prompts).",
    )

    @field_validator("prompts", mode="before")
    @classmethod
    def _reference(cls, value: Any) -> Any:
        return list(REFERENCE_PROMPTS) if value == "reference" else value

    @field_validator("prompts")
    @classmethod
    def _no_empty_prompt(cls, value: list[str]) -> list[str]:
        empty = [i for i, prompt in enumerate(value) if not prompt.strip()]
        if empty:
            raise ValueError(f"samples.prompts[{empty[0]}] is empty; give text to continue")
        return value

    @model_validator(mode="after")
    def _something_to_sample(self) -> SamplesConfig:
        if not self.documents and not self.prompts:
            raise ValueError(
                "samples.documents is 0 and samples.prompts is empty, so there is nothing to "
                "sample; give samples.documents (held-out document openings) or samples.prompts"
            )
        return self

    max_new_tokens: Annotated[int, Field(ge=1, le=4096, strict=True)] = Field(
        40, description="Tokens generated after each prompt."
    )
    temperature: Annotated[float, Field(ge=0)] = Field(
        0.8, description="Sampling temperature; 0 means greedy decoding."
    )
    top_k: Annotated[int, Field(ge=1, strict=True)] | None = Field(
        None, description="Sample among the k most likely tokens only; null: all tokens."
    )
    top_p: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None,
        description="Nucleus sampling: the smallest set of tokens holding this much "
        "probability; null: off.",
    )
    repetition_penalty: Annotated[float, Field(gt=0)] = Field(
        1.0, description="Penalty on tokens already in the text (1.0: off)."
    )
    seed: Seed = Field(0, description="Seed of the sampler's first draw, the same for every run.")
    draws: Annotated[int, Field(ge=1, le=16, strict=True)] = Field(
        3,
        description="Continuations of each prompt, draw d with sampler seed seed + d (the "
        "same seeds for every run); the quality measures pool every draw.",
    )


class Spaced(Section):
    """``{logspace: [lo, hi], num: n}`` or ``{linspace: [lo, hi], num: n}``: n values from lo
    to hi (both included), evenly spaced in log or linear scale, rounded to 4 significant
    digits. Integer ends whose values all land on integers give integers (``{linspace: [1,
    4], num: 4}`` is 1, 2, 3, 4), so a range can sweep a layer count or a width."""

    logspace: tuple[int | float, int | float] | None = None
    linspace: tuple[int | float, int | float] | None = None
    num: Annotated[int, Field(ge=2, le=1000, strict=True)]

    @model_validator(mode="after")
    def _one_range(self) -> Spaced:
        if (self.logspace is None) == (self.linspace is None):
            raise ValueError("give exactly one of logspace: [lo, hi] or linspace: [lo, hi]")
        if self.logspace is not None and min(self.logspace) <= 0:
            raise ValueError(f"logspace {list(self.logspace)} needs positive ends")
        return self

    def values(self) -> list[float]:
        lo, hi = self.logspace or self.linspace  # type: ignore[misc]
        steps = [i / (self.num - 1) for i in range(self.num)]
        if self.logspace is not None:
            raw = [math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * t) for t in steps]
        else:
            raw = [lo + (hi - lo) * t for t in steps]
        values = [float(f"{v:.4g}") for v in raw]
        if all(isinstance(end, int) for end in (lo, hi)) and all(v.is_integer() for v in values):
            return [int(v) for v in values]
        return values


class SweepConfig(Section):
    """Variants generated from value lists: ``grid`` (every combination) or ``zip`` (the i-th
    value of every field together), applied to each configuration named in ``over``. A value
    list is a YAML list or a ``Spaced`` range. Each point is an ordinary variant named by its
    values (``learning_rate=0.001``; ``high_lr,d_model=256,n_layers=8`` over a variant)."""

    grid: dict[str, list[Any] | Spaced] | None = Field(
        None, description="Fields and their values; every combination is a variant."
    )
    zip: dict[str, list[Any] | Spaced] | None = Field(
        None,
        description="Fields and equally long value lists, taken together position by position.",
    )
    over: list[str] = Field(
        default_factory=lambda: ["baseline"],
        min_length=1,
        description="Configurations the sweep varies: baseline and/or variant names.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> SweepConfig:
        if (self.grid is None) == (self.zip is None):
            raise ValueError("a sweep has exactly one of grid: or zip:")
        fields = self.grid or self.zip
        if not fields:
            raise ValueError("a sweep needs at least one field")
        lengths = {k: len(self.values_of(k)) for k in fields}
        if any(n == 0 for n in lengths.values()):
            raise ValueError(f"empty value list: {[k for k, n in lengths.items() if not n]}")
        if self.zip is not None and len(set(lengths.values())) > 1:
            raise ValueError(f"zip needs value lists of one length; got {lengths}")
        return self

    @property
    def kind(self) -> str:
        return "grid" if self.grid is not None else "zip"

    def values_of(self, field: str) -> list[Any]:
        value = (self.grid or self.zip or {})[field]
        return value.values() if isinstance(value, Spaced) else list(value)

    def count(self) -> int:
        """Points this sweep generates per configuration, without generating them."""
        lengths = [_length(v) for v in (self.grid or self.zip or {}).values()]
        return math.prod(lengths) if self.grid is not None else lengths[0]

    def points(self) -> list[dict[str, Any]]:
        fields = list(self.grid or self.zip or {})
        columns = [self.values_of(f) for f in fields]
        rows = itertools.product(*columns) if self.grid is not None else zip(*columns, strict=True)
        return [dict(zip(fields, row, strict=True)) for row in rows]


def _length(values: list[Any] | Spaced) -> int:
    return values.num if isinstance(values, Spaced) else len(values)


def format_value(value: Any) -> str:
    """A short, deterministic spelling of a swept value for a variant name."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def point_name(base: str, point: Mapping[str, Any]) -> str:
    values = ",".join(f"{k}={format_value(v)}" for k, v in point.items())
    return values if base == "baseline" else f"{base},{values}"


class BudgetConfig(Section):
    """How the runs' training budgets relate (``budget:`` in a study)."""

    match: Literal["tokens", "flops"] | None = Field(
        None,
        description="Set every variant's max_steps so that its own schedule ends at the "
        "baseline's budget in training tokens or FLOPs: max_steps = round(baseline budget / "
        "the variant's budget per step). null: every run keeps its own max_steps.",
    )
    ladder: list[Annotated[float, Field(gt=0)]] | None = Field(
        None,
        description="Train the baseline again at these multiples of its max_steps, each with "
        "a full schedule (e.g. [0.25, 0.5, 1, 2]); the analysis fits L(C) = E + A C^-alpha to "
        "them and states each variant's compute multiplier.",
    )

    @field_validator("ladder")
    @classmethod
    def _ladder(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and len({*value, 1.0}) < 3:
            raise ValueError(
                f"ladder {value}: a fit needs the baseline at two or more other budgets "
                "(e.g. [0.25, 0.5, 1, 2])"
            )
        return value


class StudyConfig(Section):
    """A study file, before expansion."""

    name: str = Field(description="Study name; the default output is results/<name>.")
    description: str = Field("", description="Free text shown in the report.")
    seeds: list[Seed] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="Replicates: every variant runs once per seed.",
    )
    data: dict[str, Any] = Field(default_factory=dict, description="The data section of every run.")
    baseline: dict[str, Any] = Field(
        description="A run config (model and train sections or flat keys); itself a run."
    )
    variants: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict, description="Named overrides of the baseline (flat keys allowed)."
    )
    sweeps: list[SweepConfig] = Field(
        default_factory=list, description="Variants generated from value lists (grid or zip)."
    )
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    tune: dict[str, list[Any] | Spaced] | None = Field(
        None,
        description="Fields and values to tune every configuration over (a grid); each "
        "configuration is compared at its best value, chosen on validation and reported on the "
        "test split (data.test_fraction).",
    )
    scale: ScaleConfig | None = Field(
        None,
        description="Model sizes every configuration also trains at, and how the token budget "
        "follows the size; the report's Scale section compares the verdicts across sizes.",
    )
    samples: SamplesConfig = Field(default_factory=SamplesConfig)
    max_runs: Annotated[int, Field(ge=1, strict=True)] = Field(
        MAX_RUNS,
        description="The most runs the study may expand into (every configuration, size, tuning "
        "candidate and rung, times the seeds); counted before any run is built, so a grid "
        "written by mistake is refused in a moment. Raise it for a study that is meant to be "
        "that large.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not STUDY_NAME.match(value):
            raise ValueError(f"name {value!r} must be letters, digits, '_', '-' or '.'")
        return value

    @field_validator("tune")
    @classmethod
    def _something_to_choose(
        cls, value: dict[str, list[Any] | Spaced] | None
    ) -> dict[str, list[Any] | Spaced] | None:
        if value is None:
            return None
        if not value:
            raise ValueError(
                "tune is empty; give fields and the values to choose among (e.g. tune: "
                "{learning_rate: [1.0e-3, 3.0e-3, 1.0e-2]}), or leave tune out"
            )
        for field, values in value.items():
            spelled = values.values() if isinstance(values, Spaced) else values
            distinct = len({format_value(v) for v in spelled})
            if distinct < 2:
                have = "no values" if not spelled else f"one value ({format_value(spelled[0])})"
                raise ValueError(
                    f"tune.{field} has {have}; tuning chooses among two or more, so give more "
                    f"values, or set {field} under baseline: if it is a fixed setting"
                )
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds {value} repeat a seed")
        return value
