"""Configuration: the YAML that users write, validated once at the edge.

A run config has three sections, ``model``, ``train`` and ``data`` (the pydantic models below;
each field's description is its documentation, reused by ``lmablate config --reference``).
Researchers write variants as flat keys, so a key that names a field of exactly one section may
stand at the top level: ``{batch_size: 16}`` means ``{train: {batch_size: 16}}``.

Every mistake a user can make becomes a ``ConfigError`` that names the field, the value and what
would be valid: YAML syntax (with line and column), duplicate keys, unknown keys (with the
nearest valid name), wrong types, impossible shapes. This module does not import torch.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from lmablate.errors import ConfigError

# Integers are strict (a YAML 3.5 or "12" for a layer count is a mistake, not a conversion);
# floats stay lax because PyYAML reads ``1e-4`` (no dot) as a string.
PosInt = Annotated[int, Field(gt=0, strict=True)]
NonNegInt = Annotated[int, Field(ge=0, strict=True)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    """Decoder-only transformer, Llama-compatible by construction."""

    d_model: PosInt = Field(384, description="Width of the residual stream.")
    n_heads: PosInt = Field(6, description="Attention (query) heads; must divide d_model.")
    n_kv_heads: PosInt | None = Field(
        None,
        description="Key/value heads for grouped-query attention; must divide n_heads. "
        "null means n_heads (plain multi-head attention).",
    )
    n_layers: PosInt = Field(12, description="Transformer blocks.")
    d_ff: PosInt = Field(1536, description="Hidden width of the MLP.")
    mlp: Literal["swiglu", "silu"] = Field(
        "swiglu",
        description="MLP form. swiglu: down(silu(gate x) * up x), as in Llama. "
        "silu: down(silu(up x)), a plain two-matrix MLP (no Llama equivalent).",
    )
    rope_theta: PosFloat = Field(10000.0, description="Base of the rotary position frequencies.")
    norm_eps: PosFloat = Field(1.0e-5, description="Epsilon inside RMSNorm.")
    tie_embeddings: bool = Field(
        True, description="Share the token embedding matrix with the output (LM head) layer."
    )
    vocab_size: PosInt | None = Field(
        None,
        description="Rows of the embedding. null: the tokenizer's vocabulary rounded up to a "
        "multiple of 64. A tokenizer larger than this is an error.",
    )
    init_std: PosFloat = Field(0.02, description="Std of the normal init of every weight matrix.")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads "
                f"({self.n_heads}); valid n_heads for this d_model: "
                f"{_divisors(self.d_model, even_quotient=True)}"
            )
        if self.n_heads % self.kv_heads:
            raise ValueError(
                f"model.n_heads ({self.n_heads}) must be divisible by model.n_kv_heads "
                f"({self.n_kv_heads}); valid n_kv_heads: {_divisors(self.n_heads)}"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"head dimension d_model / n_heads = {self.d_model} / {self.n_heads} = "
                f"{self.head_dim} is odd; rotary embeddings rotate pairs of dimensions, so it "
                f"must be even; valid n_heads for this d_model: "
                f"{_divisors(self.d_model, even_quotient=True)}"
            )
        return self


class TrainConfig(_Section):
    """Optimization, evaluation and bookkeeping of one run."""

    batch_size: PosInt = Field(
        8, description="Sequences per optimizer step, all micro-batches and processes together."
    )
    seq_len: PosInt = Field(512, description="Tokens of context per training sequence.")
    learning_rate: PosFloat = Field(3.0e-4, description="Peak learning rate, reached after warmup.")
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        0.1, description="Cosine decay ends at min_lr_ratio * learning_rate at max_steps."
    )
    warmup_steps: NonNegInt = Field(100, description="Steps of linear warmup from 0.")
    max_steps: PosInt = Field(2000, description="Optimizer steps in the run.")
    weight_decay: NonNegFloat = Field(
        0.1, description="AdamW decoupled weight decay, on weight matrices only (not norms)."
    )
    adam_beta1: Annotated[float, Field(ge=0, lt=1)] = Field(0.9, description="AdamW beta1.")
    adam_beta2: Annotated[float, Field(ge=0, lt=1)] = Field(0.95, description="AdamW beta2.")
    adam_eps: PosFloat = Field(1.0e-8, description="AdamW epsilon.")
    grad_clip: NonNegFloat = Field(
        1.0, description="Clip the global gradient norm to this value; 0 disables clipping."
    )
    grad_accum_steps: PosInt = Field(
        1, description="Micro-batches per optimizer step; must divide batch_size."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 autocast on GPUs that support it, fp16 with a gradient scaler "
        "on older GPUs, fp32 on CPU. fp32/bf16/fp16 force one.",
    )
    device: str = Field(
        "auto", description="auto, cpu, cuda, cuda:N or mps. auto picks cuda, then mps, then cpu."
    )
    eval_every: PosInt = Field(400, description="Evaluate on the validation targets every N steps.")
    eval_tokens: PosInt = Field(
        65536,
        description="Validation target tokens scored at each evaluation (capped by what the "
        "validation documents hold); the same targets for every seq_len and batch size.",
    )
    log_every: PosInt = Field(10, description="Log training metrics every N steps.")
    checkpoint_every: PosInt = Field(500, description="Save a resumable checkpoint every N steps.")
    seed: NonNegInt = Field(0, description="Seed of the weight initialization.")
    data_seed: NonNegInt = Field(0, description="Seed of the training batch order.")
    compile: bool = Field(
        False,
        description="Compile the model with torch.compile. The first step after a start or "
        "resume compiles; its wall time is summary.json's compile_s, which the summary's "
        "train_time_s and tokens_per_s leave out (metrics.jsonl times every step as it ran).",
    )
    logger: Literal["none", "tensorboard", "wandb"] = Field(
        "none",
        description="Mirror metrics.jsonl to an experiment tracker: tensorboard (event files "
        "in RUN_DIR/tensorboard) or wandb (set WANDB_MODE=offline to run without an account). "
        "Optional extras: pip install 'lmablate[tensorboard]' or 'lmablate[wandb]'.",
    )
    wandb_project: str = Field("lmablate", description="Weights & Biases project (logger: wandb).")

    @model_validator(mode="after")
    def _check_schedule(self) -> TrainConfig:
        if self.warmup_steps >= self.max_steps:
            raise ValueError(
                f"train.warmup_steps ({self.warmup_steps}) must be smaller than train.max_steps "
                f"({self.max_steps})"
            )
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"train.grad_accum_steps ({self.grad_accum_steps}) must divide train.batch_size "
                f"({self.batch_size}); valid values: {_divisors(self.batch_size)}"
            )
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(
                f"train.device {self.device!r} is not a device; valid: auto, cpu, cuda, cuda:N, mps"
            )
        return self


class BPETraining(_Section):
    vocab_size: Annotated[int, Field(ge=260, le=65536, strict=True)] = Field(
        4096, description="Vocabulary of the byte-level BPE tokenizer trained on the corpus."
    )


class TrainedTokenizer(_Section):
    """``{train_bpe: {vocab_size: N}}``: a BPE tokenizer trained on the training documents."""

    train_bpe: BPETraining


class DataConfig(_Section):
    """The corpus, its tokenizer and the document-level train/validation split."""

    source: Literal["hf", "local", "builtin"] = Field(
        "hf",
        description="hf: stream from the Hugging Face Hub (or a local folder laid out like a "
        "hub dataset). local: files at path. builtin: English prose that ships with Python "
        "(the standard library's documentation topics), needs no download.",
    )
    dataset: str = Field(
        "HuggingFaceTB/smollm-corpus", description="Hub dataset id or folder (source: hf)."
    )
    subset: str | None = Field("cosmopedia-v2", description="Dataset configuration (source: hf).")
    split: str = Field("train", description="Dataset split to read (source: hf).")
    text_field: str = Field(
        "text", description="Field holding the text in hf, .jsonl, .json and .parquet records."
    )
    path: str | None = Field(
        None,
        description="source: local. A .txt file (documents separated by blank lines), a "
        ".jsonl/.json/.parquet file of records, or a directory of .txt files (one document "
        "per file). Relative paths are relative to the working directory.",
    )
    num_documents: PosInt | None = Field(
        500, description="Read the first N documents of the source; null reads all of them."
    )
    tokenizer: str | TrainedTokenizer = Field(
        "HuggingFaceTB/SmolLM-135M",
        description="A hub tokenizer id, a local directory or tokenizer.json, or "
        "{train_bpe: {vocab_size: N}} to train a byte-level BPE on the training documents.",
    )
    val_fraction: Annotated[float, Field(gt=0, le=0.5)] = Field(
        0.1, description="Share of documents held out for validation, in (0, 0.5]."
    )
    split_seed: NonNegInt = Field(0, description="Seed of the document-level train/val split.")
    cache_dir: str | None = Field(
        None,
        description="Where token caches live; null: $LMABLATE_CACHE or ~/.cache/lmablate.",
    )

    @model_validator(mode="after")
    def _check_paths(self, info: ValidationInfo) -> DataConfig:
        if info.context and not info.context.get("check_paths", True):
            return self  # a finished run's config: its corpus may have moved since
        if self.source == "local":
            if self.path is None:
                raise ValueError("data.path is required when data.source is 'local'")
            if not Path(self.path).expanduser().exists():
                raise ValueError(f"data.path {self.path!r} does not exist")
        tokenizer = self.tokenizer
        if (
            isinstance(tokenizer, str)
            and looks_like_path(tokenizer)
            and not Path(tokenizer).expanduser().exists()
        ):
            raise ValueError(
                f"data.tokenizer {tokenizer!r} looks like a path but does not exist; give a "
                "hub id, a tokenizer directory or a tokenizer.json file"
            )
        return self


class RunConfig(_Section):
    """Everything one training run needs."""

    description: str = Field("", description="Free text shown in reports.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    data: DataConfig = Field(default_factory=DataConfig)


SECTIONS: dict[str, type[_Section]] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "data": DataConfig,
}

# Flat key -> its section. Field names are unique across sections by design (asserted here), so
# a flat key is never ambiguous.
FLAT_KEYS: dict[str, str] = {
    field: section for section, cls in SECTIONS.items() for field in cls.model_fields
}
assert len(FLAT_KEYS) == sum(len(cls.model_fields) for cls in SECTIONS.values())


def looks_like_path(value: str) -> bool:
    """A tokenizer spec meant as a file system path rather than a hub id."""
    return value.startswith((".", "/", "~")) or value.endswith(".json")


def _divisors(n: int, even_quotient: bool = False) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0 and not (even_quotient and (n // k) % 2)]


# --------------------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads ``1e-4`` as a float (YAML 1.2 style)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping, with user-facing errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = parse_yaml(path.read_text(encoding="utf-8"), source=str(path))
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


# ------------------------------------------------------------------------------- key checking


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds, looking inside ``X | None`` and unions."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
    return None


def unknown_key_errors(
    cls: type[BaseModel], data: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """Messages for keys in ``data`` (recursively) that ``cls`` does not define."""
    errors = []
    for key, value in data.items():
        field = cls.model_fields.get(key)
        if field is None:
            top_level = cls is RunConfig
            hint = _suggest(key, [*cls.model_fields, *(FLAT_KEYS if top_level else ())])
            if not hint and key in FLAT_KEYS:
                hint = f"; {key!r} belongs in the {FLAT_KEYS[key]!r} section"
            valid = ", ".join(cls.model_fields)
            if top_level:
                valid += ", or any field of those sections as a flat key"
            errors.append(f"{prefix}{key}: unknown key{hint} (valid keys: {valid})")
            continue
        sub = _nested_model(field.annotation)
        if sub is not None and isinstance(value, Mapping):
            errors.extend(unknown_key_errors(sub, value, f"{prefix}{key}."))
    return errors


def nest_flat_keys(raw: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Move top-level flat keys into their sections: ``{lr...}`` -> ``{train: {lr...}}``."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}{key}: expected a mapping of fields, got {_kind(value)}")
            section = out.setdefault(key, {})
            for field, field_value in value.items():
                if field in section:
                    raise ConfigError(f"{where}{key}.{field} is given twice (once as a flat key)")
                section[field] = field_value
        elif key in FLAT_KEYS:
            section = out.setdefault(FLAT_KEYS[key], {})
            if key in section:
                raise ConfigError(
                    f"{where}{FLAT_KEYS[key]}.{key} is given twice (once as a flat key)"
                )
            section[key] = value
        else:
            out[key] = value
    return out


def format_validation_error(exc: ValidationError, where: str = "") -> str:
    # pydantic names the union member it tried inside the location, e.g.
    # ('data', 'tokenizer', 'str'); drop those tags, then drop an error whose location is a
    # strict prefix of another's: that is the union member the user did not mean.
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(str(p) for p in err["loc"] if not _is_union_tag(p))
        errors.append((loc, err))
    lines = []
    for loc, err in errors:
        if any(len(other) > len(loc) and other[: len(loc)] == loc for other, _ in errors):
            continue
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "value_error" or not loc:
            lines.append(f"{where}{message}")
        elif err["type"] == "missing":
            lines.append(f"{where}{'.'.join(loc)}: required, but missing")
        else:
            lines.append(f"{where}{'.'.join(loc)}: {message} (got {err['input']!r})")
    return "\n".join(dict.fromkeys(lines))


def _is_union_tag(part: Any) -> bool:
    return part in ("str", "int", "float", "bool", "none") or (
        isinstance(part, str) and part[:1].isupper()
    )


def validate_run_config(raw: Mapping[str, Any], where: str = "") -> RunConfig:
    """Build a RunConfig from a (possibly flat-keyed) mapping, or raise ConfigError."""
    nested = nest_flat_keys(raw, where)
    errors = unknown_key_errors(RunConfig, nested)
    if errors:
        raise ConfigError("\n".join(f"{where}{e}" for e in errors))
    try:
        return RunConfig.model_validate(nested)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None


# ---------------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.learning_rate=1e-3"`` -> ``("train.learning_rate", 0.001)`` (YAML-typed)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set learning_rate=1e-3")
    return key, parse_yaml(value, source=f"--set {key}")


def resolve_key(key: str, cls: type[BaseModel] = RunConfig) -> list[str]:
    """Turn a dotted or flat key into a full path in ``cls``, or raise with a suggestion."""
    parts = key.split(".")
    if cls is RunConfig and parts[0] not in RunConfig.model_fields and parts[0] in FLAT_KEYS:
        parts.insert(0, FLAT_KEYS[parts[0]])
    current: type[BaseModel] | None = cls
    for depth, part in enumerate(parts):
        if current is None or part not in current.model_fields:
            valid = list(current.model_fields) if current else []
            if depth == 0 and cls is RunConfig:
                valid += list(FLAT_KEYS)
            prefix = ".".join(parts[:depth])
            hint = _suggest(part, valid) or f" (valid: {', '.join(valid)})"
            raise ConfigError(
                f"--set {key}: {prefix + '.' if prefix else ''}{part} is not a config field{hint}"
            )
        current = _nested_model(current.model_fields[part].annotation)
    return parts


def set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        child = data.get(part)
        if not isinstance(child, dict):
            child = data[part] = {}
        data = child
    data[path[-1]] = value


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set KEY=VALUE`` strings to a run-config mapping (flat keys nested first)."""
    nested = nest_flat_keys(raw)
    for text in overrides:
        key, value = parse_override(text)
        set_path(nested, resolve_key(key), value)
    return nested


def load_run_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read, override and validate a run config file."""
    raw = read_yaml_mapping(path)
    return validate_run_config(apply_overrides(raw, overrides), where=f"{path}: ")


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The config a run directory was trained with (paths are not re-checked)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.json)")
    return RunConfig.model_validate(json.loads(path.read_text()), context={"check_paths": False})


# ------------------------------------------------------------------------------ documentation


def field_reference() -> str:
    """A Markdown table per section: every field, its default and its meaning."""
    out = []
    for name, cls in SECTIONS.items():
        out.append(f"### `{name}`\n\n{(cls.__doc__ or '').strip()}\n")
        out.append("| field | default | meaning |\n|---|---|---|")
        for field_name, field in cls.model_fields.items():
            default = field.get_default(call_default_factory=True)
            shown = "null" if default is None else yaml.safe_dump(default).strip()
            shown = shown.removesuffix("\n...").strip()
            out.append(f"| `{field_name}` | `{shown}` | {field.description} |")
        out.append("")
    return "\n".join(out)
