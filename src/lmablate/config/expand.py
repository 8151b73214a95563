"""Expansion of a study into its configurations: each override nested into sections and
checked, sweep points and tuning candidates, the budget ladder's rungs and the scale axis's
sizes, each an ordinary named variant; and a variant's changes from the baseline as minimal
nested deltas. No torch.
"""

from __future__ import annotations

import copy
import json
import re
import typing
from collections.abc import Mapping
from typing import Any

from lmablate.config.data import check_variant_data
from lmablate.config.design import StudyConfig, SweepConfig, format_value, point_name
from lmablate.config.effect import unread_settings
from lmablate.config.keys import (
    join_problems,
    nest_flat_keys,
    suggest,
    unknown_key_errors,
    validate_run_config,
)
from lmablate.config.run import FLAT_KEYS, SECTIONS, RunConfig
from lmablate.config.scale import REFERENCE, resized, size_variant
from lmablate.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.,=+-]*$")  # a variant's: it names a directory
MAX_NAME = 120  # characters of a variant name: a directory name holds at most 255 bytes
PER_REPLICATE = ("seed", "data_seed")  # set by the study's seeds, never by a variant


def flatten_sections(section_dict: Mapping[str, Any]) -> dict[str, Any]:
    return {
        field: value
        for section in ("model", "train", "data")
        for field, value in section_dict.get(section, {}).items()
    }


def merge_mappings(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_mappings(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def checked_overrides(
    raw: Any, where: str, study_data: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A baseline or variant mapping, nested into sections, checked for study-level fields.
    ``study_data``: the study's data section, for a variant (a baseline changes no data)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping of fields, got {type(raw).__name__}")
    nested = nest_flat_keys(raw, f"{where}.")
    if "data" in nested and study_data is None:
        raise ConfigError(
            f"{where}: data fields ({', '.join(nested['data'])}) belong to the study's data "
            "section, shared by every run so all runs score the same validation targets"
        )
    if "data" in nested:
        try:
            check_variant_data(nested["data"], dict(study_data), where)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if "eval_tokens" in nested.get("train", {}) and not where.endswith("baseline"):
        raise ConfigError(
            f"{where}: eval_tokens sets which validation targets are scored; it belongs to the "
            "baseline so every run scores the same targets"
        )
    per_replicate = [k for k in PER_REPLICATE if k in nested.get("train", {})]
    if per_replicate:
        raise ConfigError(
            f"{where}: {', '.join(per_replicate)} are set per replicate by the study's seeds "
            "(e.g. seeds: [0, 1, 2]), not per run"
        )
    errors = unknown_key_errors(RunConfig, nested)
    if errors:
        raise ConfigError(join_problems([f"{where}.{e}" for e in errors]))
    return nested


SAME = object()


def changes_from(base: Any, value: Any) -> Any:
    """What ``value`` changes from ``base``: a nested mapping keeps only its changed entries
    (so ``sources: {code: {weight: 0.5}}``, which merges back onto the study's data)."""
    if base == value:
        return SAME
    if isinstance(base, Mapping) and isinstance(value, Mapping):
        out = {k: changes_from(base.get(k), v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not SAME}
    return value


def count_runs(study: StudyConfig) -> tuple[int, str]:
    """How many runs ``study`` expands into, from the sizes of its sweeps alone (nothing is
    built), and how that count is made up, for the message that refuses too many."""
    configs = 1 + len(study.variants)
    parts = [f"{configs} written configuration{'s' if configs > 1 else ''}"]
    for i, sweep in enumerate(study.sweeps):
        points = sweep.count() * len(sweep.over)
        configs += points
        parts.append(f"+ sweeps[{i}]: {points:,} points")
    if study.scale is not None:
        configs *= len(study.scale.sizes)
        parts.append(f"x {len(study.scale.sizes)} sizes")
    if study.tune:
        candidates = SweepConfig(grid=study.tune).count()
        configs *= candidates
        parts.append(f"x {candidates:,} tuning candidates")
    rungs = len(set(study.budget.ladder or ()) - {1})
    if rungs:
        configs += rungs
        parts.append(f"+ {rungs} budget rungs")
    runs = configs * len(study.seeds)
    parts.append(f"x {len(study.seeds)} seed{'s' if len(study.seeds) > 1 else ''}")
    return runs, " ".join(parts)


def check_run_count(study: StudyConfig, where: str) -> None:
    """Refuse a study that would expand into more than ``max_runs`` runs, before building any."""
    runs, made_of = count_runs(study)
    if runs > study.max_runs:
        raise ConfigError(
            f"{where}the study expands into {runs:,} runs ({made_of}), more than max_runs "
            f"({study.max_runs:,}); shrink its sweeps, or if it is meant to be that large, set "
            f"max_runs: {runs} in the study (or --set max_runs={runs})"
        )


def _takes_integers(field: str) -> bool:
    """A run field whose values are integers only (a layer count, a width)."""
    section = FLAT_KEYS.get(field)
    if section is None:
        return False
    leaves, todo = set(), [SECTIONS[section].model_fields[field].annotation]
    while todo:
        annotation = todo.pop()
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) is typing.Annotated:
            todo.append(args[0])
        elif args:
            todo += args
        else:
            leaves.add(annotation)
    return int in leaves and float not in leaves and str not in leaves


def ladder_name(multiple: float) -> str:
    return f"budget={format_value(float(multiple))}x"


def expand_ladder(
    study: StudyConfig,
    baseline: dict[str, Any],
    variant_changes: dict[str, dict[str, Any]],
    labels: dict[str, str],
) -> dict[str, float]:
    """The baseline at each multiple of its max_steps (1 is the baseline itself), as variants
    named ``budget=0.25x``; returns {name: multiple}."""
    if not study.budget.ladder:
        return {}
    base_steps = validate_run_config({**baseline, "data": study.data}).train.max_steps
    rungs = {}
    for multiple in sorted(set(study.budget.ladder)):
        if multiple == 1:
            continue
        name = ladder_name(multiple)
        if name in variant_changes:
            raise ConfigError(f"budget.ladder: variant {name!r} is already defined")
        steps = max(1, round(multiple * base_steps))
        variant_changes[name] = {
            "description": f"the baseline at {format_value(float(multiple))}x its budget "
            f"({steps} steps)",
            "train": {"max_steps": steps},
        }
        labels[name] = f"budget.ladder at {format_value(float(multiple))}x ({steps} steps)"
        rungs[name] = multiple
    return rungs


def expand_scale(
    study: StudyConfig,
    baseline: dict[str, Any],
    variant_changes: dict[str, dict[str, Any]],
    labels: dict[str, str],
    where: str,
) -> dict[str, Any]:
    """Every configuration written so far (the baseline, variants, sweep points) at every
    size of ``scale:``, as variants named ``C,size=NAME``; returns what study.yaml records:
    the sizes and, per configuration, the variant at each size (itself at its written shape)."""
    if study.scale is None:
        return {}
    if study.budget.ladder or study.budget.match:
        raise ConfigError(
            f"{where}scale: a scale axis sets each size's budget itself (scale.tokens); it "
            "does not combine with budget: ladder or budget: match — leave those out"
        )
    sizes = [size.label for size in study.scale.sizes]
    record: dict[str, Any] = {
        **study.scale.model_dump(mode="json", exclude={"sizes"}),
        "sizes": sizes,
        "variants": {},
    }
    for config in list(variant_changes):
        merged = merge_mappings(baseline, variant_changes[config])
        merged["data"] = merge_mappings(study.data, merged.get("data", {}))
        model = validate_run_config(merged, f"{where}{labels[config]}: ").model
        written = model.model_dump(mode="json")
        at: dict[str, str] = {}
        for i, size in enumerate(study.scale.sizes):
            here = f"{where}scale.sizes[{i}] ({size.label}) of {labels[config]}"
            try:
                shape = resized(written, size)
            except ValueError as exc:
                raise ConfigError(f"{here}: {exc}") from None
            if all(written.get(k) == v for k, v in shape.items()):
                at[size.label] = config  # the written shape: the configuration itself
                continue
            if written["parametrization"] == "mup":
                # every size keeps the written one's base: m is measured from the same width
                shape.setdefault("mup_base_width", written["mup_base_width"] or model.d_model)
                shape.setdefault(
                    "mup_base_head_dim", written["mup_base_head_dim"] or model.head_dim
                )
            name = size_variant(config, size.label)
            if not NAME.match(name) or len(name) > MAX_NAME:
                raise ConfigError(
                    f"{here}: the variant name {name!r} would not be a safe directory name; "
                    "give the size a short name of letters, digits and _ . -"
                )
            if name in variant_changes:
                raise ConfigError(f"{here}: variant {name!r} is already defined")
            variant_changes[name] = merge_mappings(variant_changes[config], {"model": shape})
            labels[name] = here
            at[size.label] = name
        if config not in at.values():
            at = {REFERENCE: config, **at}  # the written shape trains whatever the sizes
        record["variants"][config] = at
    if any(REFERENCE in at for at in record["variants"].values()):
        record["sizes"] = [REFERENCE, *sizes]
    return record


def expand_sweeps(
    sweeps: list[SweepConfig],
    variant_changes: dict[str, dict[str, Any]],
    labels: dict[str, str],
    where: str,
    key: str = "sweeps",
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Add every sweep point to ``variant_changes`` as a named variant (labelled for error
    messages by its sweep and values). Returns {generated name: configuration it varies} and
    what each sweep generated, for study.yaml."""
    written = list(variant_changes)
    generated: dict[str, str] = {}
    records = []
    for i, sweep in enumerate(sweeps):
        here = f"{key}[{i}]" if key == "sweeps" else key
        for over in sweep.over:
            if over not in written:
                raise ConfigError(
                    f"{where}{here}.over: no configuration {over!r}{suggest(over, written)} "
                    f"(the baseline and the study's variants: {', '.join(written)})"
                )
        fields = {k: sweep.values_of(k) for k in sweep.grid or sweep.zip or {}}
        for k, values in fields.items():
            if _takes_integers(k) and not all(isinstance(v, int) for v in values):
                raise ConfigError(
                    f"{where}{here if key == 'tune' else f'{here}.{sweep.kind}'}.{k}: {k} takes "
                    "integers, but its values are "
                    f"{', '.join(format_value(v) for v in values)}; give a list, or a range with "
                    "integer ends whose steps land on integers (e.g. {linspace: [2, 8], num: 4})"
                )
        checked_overrides({k: v[0] for k, v in fields.items()}, f"{where}{here}.{sweep.kind}")
        record: dict[str, Any] = {"kind": sweep.kind, "fields": fields, "variants": {}}
        for over in sweep.over:
            names = []
            for point in sweep.points():
                name = point_name(over, point)
                values = ", ".join(f"{k}={format_value(v)}" for k, v in point.items())
                label = f"{here} ({sweep.kind}) at {values}" + (
                    "" if over == "baseline" else f" over {over}"
                )
                if not NAME.match(name):
                    raise ConfigError(
                        f"{where}{label}: the variant name {name!r} would not be a safe "
                        "directory name; sweep values may hold letters, digits and _ . , = + -"
                    )
                if len(name) > MAX_NAME:
                    raise ConfigError(
                        f"{where}{label}: the variant name would be {len(name)} characters, "
                        f"more than the {MAX_NAME} a run directory's name may take; sweep "
                        "fewer fields at once, or give the configuration a shorter name"
                    )
                if name in variant_changes:
                    raise ConfigError(
                        f"{where}{label}: variant {name!r} is already defined "
                        f"({labels[name]}); each sweep point must be a new configuration"
                    )
                nested = checked_overrides(point, f"{where}{label}")
                variant_changes[name] = merge_mappings(variant_changes[over], nested)
                labels[name], generated[name] = label, over
                names.append(name)
            record["variants"][over] = names
        records.append(record)
    return generated, records


def check_configurations(
    trained_of: Mapping[str, dict[str, Any]],
    configs: Mapping[str, RunConfig],
    written: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, str],
    exempt: set[str],
    where: str,
) -> None:
    """Every configuration must train something of its own: a variant that resolves to the
    baseline or to another configuration is refused, and so is a written setting its config
    never reads (``config.effect``). ``trained_of``: one seed's resolved configs by name, in
    the study's order, without what does not train (``config.effect.trained_part``);
    ``configs``: the same configs; ``written``: what each wrote (nested); ``exempt``: tuning
    candidates, which may coincide with another configuration by design."""
    problems = []
    for name, config in configs.items():
        fields = flatten_sections(written[name])
        problems += [f"{where}{labels[name]}: {p}" for p in unread_settings(config, fields)]
    seen: dict[str, str] = {}
    for name, trained in trained_of.items():
        key = json.dumps(trained, sort_keys=True, default=str)
        other = seen.setdefault(key, name)
        if other == name or name in exempt:
            continue
        if other == "baseline":
            wrote = ", ".join(
                f"{k}={format_value(v)}" for k, v in flatten_sections(written[name]).items()
            )
            problems.append(
                f"{where}{labels[name]} changes nothing: it resolves to the baseline's "
                f"configuration ({wrote or 'it sets no field'}); a variant must change a "
                "setting that trains differently"
            )
        else:
            problems.append(
                f"{where}{labels[name]} resolves to the same configuration as {labels[other]}; "
                "each configuration must train something of its own (change or remove one)"
            )
    if problems:
        raise ConfigError(join_problems(problems))
