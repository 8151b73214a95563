"""Reading what users write: flat keys, ``--set`` overrides, and the messages for
their mistakes (YAML files themselves: ``config.yamlfile``); ``field_reference`` documents
every field.

Researchers write variants as flat keys, so a key that names a field of exactly one section may
stand at the top level: ``{batch_size: 16}`` means ``{train: {batch_size: 16}}``.

Every mistake a user can make becomes a ``ConfigError`` that names the field, the value and what
would be valid: YAML syntax (with line and column), duplicate keys, unknown keys (with the
nearest valid name), wrong types, impossible shapes. No torch.
"""

from __future__ import annotations

import json
import reprlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from lmablate.config.effect import unread_settings, written_fields
from lmablate.config.run import FLAT_KEYS, LIMITS, SECTIONS, RunConfig
from lmablate.config.yamlfile import (  # re-exported: the readers of config files
    kind_of,
    parse_yaml,
    read_yaml_mapping,
)
from lmablate.errors import ConfigError, suggest

T = TypeVar("T")


# ------------------------------------------------------------------------------- key checking


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
            hint = suggest(key, [*cls.model_fields, *(FLAT_KEYS if top_level else ())])
            if not hint and key in FLAT_KEYS:
                hint = f"; {key!r} belongs in the {FLAT_KEYS[key]!r} section"
            valid = ", ".join(cls.model_fields)
            if top_level:
                valid += ", or any field of those sections as a flat key"
            errors.append(f"{prefix}{show_key(key)}: unknown key{hint} (valid keys: {valid})")
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
                raise ConfigError(
                    f"{where}{key}: expected a mapping of fields, got {kind_of(value)}"
                )
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


_SHORT = reprlib.Repr()  # keyword arguments need Python 3.12
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist = 2, 4, 4
_SHORT.maxstring = _SHORT.maxother = 60


MAX_PROBLEMS = 3  # lines of one error message; the rest are counted


def show_key(key: Any) -> str:
    """A key as a message quotes it: as written when it is a plain name, else its repr (an
    empty key, one with spaces at its ends or with control characters)."""
    text = str(key)
    return text if text and text.isprintable() and text.strip() == text else repr(key)


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def join_problems(lines: list[str]) -> str:
    """One line per problem, the first few of them: a message stays a few lines long however
    many keys a file gets wrong."""
    lines = list(dict.fromkeys(_one_line(line) for line in lines))
    if len(lines) <= MAX_PROBLEMS:
        return "\n".join(lines)
    rest = len(lines) - MAX_PROBLEMS
    return "\n".join([*lines[:MAX_PROBLEMS], f"(and {rest} more problem{'s' * (rest > 1)})"])


def _model_at(cls: type[BaseModel] | None, loc: tuple[str, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the last key of ``loc`` (list indices and dict keys of
    ``dict[str, Model]`` fields are stepped over), or None when ``loc`` leaves the models."""
    current: Any = cls
    for part in loc:
        if current is None:
            return None
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            continue  # a list index or a mapping key: the same model's items
        current = _nested_model(field.annotation) or _item_model(field.annotation)
    return current if isinstance(current, type) else None


def _item_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``list[Model]`` or ``dict[str, Model]`` (through unions)."""
    for arg in typing.get_args(annotation):
        found = _nested_model(arg) or _item_model(arg)
        if found is not None:
            return found
    return None


def _unknown_key(cls: type[BaseModel] | None, loc: tuple[str, ...]) -> str:
    """The message for a key pydantic found extra: the valid keys, and the nearest of them."""
    holder = _model_at(cls, loc[:-1]) if cls is not None else None
    if holder is None:
        return f"{'.'.join(map(show_key, loc))}: unknown key"
    hint = suggest(loc[-1], list(holder.model_fields))
    valid = ", ".join(holder.model_fields)
    return f"{'.'.join(map(show_key, loc))}: unknown key{hint} (valid keys: {valid})"


def format_validation_error(
    exc: ValidationError, where: str = "", model: type[BaseModel] | None = None
) -> str:
    # pydantic names the union member it tried inside the location, e.g.
    # ('data', 'tokenizer', 'str'); drop those tags, then drop an error whose location is a
    # strict prefix of another's: that is the union member the user did not mean.
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(str(p) for p in err["loc"] if not _is_union_tag(p))
        errors.append((loc, err))
    lines = []
    kinds: dict[tuple[str, ...], list[str]] = {}  # the types each location would take
    for loc, err in errors:
        if err["type"] in KINDS:
            kinds.setdefault(loc, []).append(KINDS[err["type"]])
    for loc, err in errors:
        if any(len(other) > len(loc) and other[: len(loc)] == loc for other, _ in errors):
            continue
        if err["type"] in KINDS:  # one line per location, in the file's terms, never a class
            wanted = kinds.pop(loc, None)
            if wanted is not None:  # else: the location's line is written
                got = _SHORT.repr(err["input"])
                shown = " or ".join(dict.fromkeys(wanted))
                lines.append(f"{where}{'.'.join(loc)}: expected {shown} (got {got})")
            continue
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "value_error" or not loc:
            lines.append(f"{where}{message}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{where}{_unknown_key(model, loc)}")
        elif err["type"] == "missing":
            lines.append(f"{where}{'.'.join(loc)}: required, but missing")
        else:
            got = _SHORT.repr(err["input"])  # never builds, let alone echoes, a huge value
            reason = LIMITS.get(loc[-1]) if err["type"] == "less_than_equal" else None
            why = f"; {reason[1]}" if reason else ""
            lines.append(f"{where}{'.'.join(loc)}: {message} (got {got}){why}")
    return join_problems(lines)


KINDS = {  # pydantic's type errors -> what the file should hold there
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "text",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}


def _is_union_tag(part: Any) -> bool:
    """A union member's name in a location ('str', 'Spaced', 'list[any]',
    'function-after[...]'): not a key the user wrote."""
    return part in ("str", "int", "float", "bool", "none") or (
        isinstance(part, str) and (part[:1].isupper() or "[" in part or part.startswith("function"))
    )


def validate_run_config(raw: Mapping[str, Any], where: str = "") -> RunConfig:
    """Build a RunConfig from a (possibly flat-keyed) mapping, or raise ConfigError."""
    nested = nest_flat_keys(raw, where)
    errors = unknown_key_errors(RunConfig, nested)
    if errors:
        raise ConfigError(join_problems([f"{where}{e}" for e in errors]))
    try:
        return RunConfig.model_validate(nested)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where, RunConfig)) from None


def checked_run_config(raw: Mapping[str, Any], where: str = "") -> RunConfig:
    """``validate_run_config`` of what a user wrote, refusing a written setting the config
    never reads (``config.effect``). A resolved config (a run's own config.json, which a
    study hands to each launched run) lists every field, read or not, and is not checked."""
    config = validate_run_config(raw, where)
    nested = nest_flat_keys(raw, where)
    resolved = all(
        set(SECTIONS[section].model_fields) <= set(nested.get(section) or {})
        for section in ("model", "train")
    )
    problems = [] if resolved else unread_settings(config, written_fields(config))
    if problems:
        raise ConfigError(join_problems([f"{where}{p}" for p in problems]))
    return config


# ---------------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.learning_rate=1e-3"`` -> ``("train.learning_rate", 0.001)`` (YAML-typed)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set learning_rate=1e-3")
    return key, parse_yaml(value, source=f"--set {key}")


def resolve_key(
    key: str,
    cls: type[BaseModel] = RunConfig,
    *,
    written: str | None = None,
    within: str = "",
    also: Iterable[str] = (),
) -> list[str]:
    """Turn a dotted or flat key into a full path in ``cls``, or raise with a suggestion.
    Messages quote ``written`` (the key as typed; default ``key``) and name each field under
    ``within`` (where ``cls`` sits in the file, e.g. ``variants.small``); ``also`` are other
    names valid at the top (a study's own keys), offered as suggestions."""
    written = written or key
    parts = key.split(".")
    if cls is RunConfig and parts[0] not in RunConfig.model_fields and parts[0] in FLAT_KEYS:
        parts.insert(0, FLAT_KEYS[parts[0]])
    current: type[BaseModel] | None = cls
    for depth, part in enumerate(parts):
        where = ".".join([p for p in (within, *parts[:depth]) if p])
        if current is None:
            raise ConfigError(
                f"--set {written}: {where} is a value, not a section with fields; set it "
                f"with --set {where}=VALUE"
            )
        if part not in current.model_fields:
            valid = list(current.model_fields)
            if depth == 0:
                valid += [*FLAT_KEYS, *also] if cls is RunConfig else list(also)
            hint = suggest(part, valid) or f" (valid: {', '.join(valid)})"
            noun = f"a field of {where}" if where else "a config field"
            raise ConfigError(
                f"--set {written}: {where + '.' if where else ''}{part} is not {noun}{hint}"
            )
        current = _nested_model(current.model_fields[part].annotation)
    if cls is RunConfig and len(parts) == 1 and parts[0] in SECTIONS:
        where = ".".join([p for p in (within, parts[0]) if p])
        raise ConfigError(
            f"--set {written}: names the whole {where} section, which --set does not replace "
            f"or reset; set its fields one at a time (e.g. --set {where}."
            f"{next(iter(SECTIONS[parts[0]].model_fields))}=...)"
        )
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
    if "baseline" in raw or "variants" in raw:
        raise ConfigError(
            f"{path} is a study file (it has baseline:/variants:), not a run config; run it "
            f"with: lmablate run {path}"
        )
    overrides = list(overrides)
    return blaming_overrides(
        path,
        overrides,
        lambda where: checked_run_config(apply_overrides(raw, overrides), where=where),
        lambda where: checked_run_config(raw, where=where),
    )


def blaming_overrides(
    path: str | Path,
    overrides: list[str],
    with_overrides: Callable[[str], T],
    file_alone: Callable[[str], object],
) -> T:
    """Validate a file with its ``--set`` values; when that fails, name the file if the file
    alone is invalid, else the ``--set`` values that made it so. Each callable takes the
    prefix its messages start with."""
    try:
        return with_overrides(f"{path}: ")
    except ConfigError:
        if not overrides:
            raise
        file_alone(f"{path}: ")  # raises: the file's own mistake is named as such
        return with_overrides(f"--set {' '.join(overrides)}: ")


def with_defaults(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A run config recorded by an earlier version, as this version resolves it: fields added
    since take their defaults, which are the behaviour the run had. Left as it is if it no
    longer validates (then it differs from anything this version would train)."""
    try:
        cfg = RunConfig.model_validate(recorded, context={"check_paths": False})
    except ValidationError:
        return dict(recorded)
    return cfg.model_dump(mode="json")


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The config a run directory was trained with (paths are not re-checked)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.json)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{path} is damaged: not valid JSON, so the run cannot be read") from None
    if isinstance(raw, dict) and "model_type" in raw:
        raise ConfigError(
            f"{run_dir} holds a Hugging Face model config ({raw['model_type']!r}), not a run "
            "of lmablate's: it is an export, so there is no run here to read; give the run "
            "directory it was exported from"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is damaged: not a JSON object")
    try:
        return RunConfig.model_validate(raw, context={"check_paths": False})
    except ValidationError as exc:
        problems = format_validation_error(exc, f"{path}: ", RunConfig)
        raise ConfigError(f"{problems}\n(the run's config.json is damaged)") from None


# ------------------------------------------------------------------------------ documentation


def _shown(default: Any) -> str:
    shown = "null" if default is None else yaml.safe_dump(default).strip()
    return shown.removesuffix("\n...").strip()


def field_reference() -> str:
    """A Markdown table per section: every field, its default and its meaning."""
    out = []
    for name, cls in SECTIONS.items():
        out.append(f"### `{name}`\n\n{(cls.__doc__ or '').strip()}\n")
        out.append("| field | default | meaning |\n|---|---|---|")
        for field_name, field in cls.model_fields.items():
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):  # a nested section: one row per field
                for sub_name, sub in type(default).model_fields.items():
                    shown = _shown(sub.get_default(call_default_factory=True))
                    out.append(f"| `{field_name}.{sub_name}` | `{shown}` | {sub.description} |")
                continue
            out.append(f"| `{field_name}` | `{_shown(default)}` | {field.description} |")
        out.append("")
    return "\n".join(out)
