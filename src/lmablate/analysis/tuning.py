"""The tuned comparison: every configuration at its own best value. No torch.

A study with ``tune: {learning_rate: [...]}`` trains every configuration at every value (the
candidates, named like sweep points). Comparing configurations at one shared value can make a
change look worse only because its best value lies elsewhere; here each configuration is
represented by the candidate with the lowest validation loss (the mean over seeds; bits per
byte when the study's tokenizers differ, as everywhere), and what is reported about it, and
compared with the baseline's choice, is its loss on the **test** documents, which neither
training nor the choice saw. Choosing on the numbers one reports would flatter every
configuration by the luck of its best candidate.

A choice at either end of a value list is flagged: the best value may lie beyond it. So is a
one-factor series of variants whose best value lies at its edge (``sweep_edges``).
"""

from __future__ import annotations

import itertools
from typing import Any

from lmablate.analysis.rundata import StudyData
from lmablate.analysis.stats import compare, noise_floor, summarize, with_verdicts
from lmablate.analysis.validity import NOT_FACTORS, derived_fields


def _flat(config: dict[str, Any] | None) -> dict[str, Any]:
    return {
        k: v
        for section in (config or {}).values()
        if isinstance(section, dict)
        for k, v in section.items()
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def tuned_comparison(study: StudyData) -> dict[str, Any]:
    """Per configuration: its candidates' validation losses, the choice, its values (edges
    flagged) and test numbers; the choices compared with the baseline's on the test split."""
    tuning = study.study.get("tuning") or {}
    if not tuning:
        return {}
    fields: dict[str, list[Any]] = tuning["fields"]
    configurations: dict[str, Any] = {}
    for config, candidates in tuning["variants"].items():
        if config not in study.compared:
            continue  # a configuration at another size: the Scale section's
        validation = {}
        for name in dict.fromkeys(candidates):
            runs = study.runs_of(name)
            finals = [r.final_score for r in runs if r.status == "complete"]
            if runs and len(finals) == len(runs):  # every seed: a survivor would flatter it
                validation[name] = _mean(finals)
        if not validation:
            configurations[config] = {"chosen": None, "validation_loss": {}}
            continue
        chosen = min(validation, key=validation.__getitem__)
        runs = study.runs_of(chosen, complete_only=True)
        values = {f: _flat(runs[0].config).get(f) for f in fields}
        edges = [
            f
            for f, value in values.items()
            if len(fields[f]) > 1 and value in (min(fields[f]), max(fields[f]))
        ]
        test = {r.seed: r.final_test_score for r in runs}
        test = {seed: loss for seed, loss in test.items() if loss is not None}
        summary = summarize(list(test.values()))
        configurations[config] = {
            "chosen": chosen,
            "values": values,
            "validation_loss": validation,
            "at_edge": edges,
            "test_loss": _mean(list(test.values())) if test else None,
            "test_interval": summary.as_dict() if summary else None,
            "test_by_seed": test,
        }
    base = configurations.get("baseline", {}).get("test_by_seed") or {}
    floor = noise_floor(list(base.values()))
    comparisons = with_verdicts(
        [
            compare(config, row["test_by_seed"], base)
            for config, row in configurations.items()
            if config != "baseline" and row.get("test_by_seed") and base
        ],
        floor,
    )
    ranked = sorted(
        (c for c, row in configurations.items() if row.get("test_loss") is not None),
        key=lambda c: configurations[c]["test_loss"],
    )
    return {
        "fields": fields,
        "configurations": configurations,
        "ranking": ranked,
        "noise_floor": floor,
        "comparisons": [c.as_dict() for c in comparisons],
    }


SENSITIVITY_FIELD = "learning_rate"


def _curves(study: StudyData) -> dict[str, list[str]]:
    """Per configuration, the runs that differ from it in the learning rate alone: from a tune
    or from sweeps whose only field is the learning rate."""
    records = [study.study.get("tuning") or {}, *(study.study.get("sweeps") or [])]
    curves: dict[str, list[str]] = {}
    for record in records:
        if list(record.get("fields") or {}) != [SENSITIVITY_FIELD]:
            continue
        for config, names in record["variants"].items():
            curves.setdefault(config, [])
            curves[config] += [n for n in names if n not in curves[config]]
    return curves


def lr_sensitivity(study: StudyData) -> dict[str, Any]:
    """Final validation loss against the learning rate per configuration, and its learning-rate
    sensitivity as Wortsman et al. 2023 define it ("Small-scale proxies for large-scale
    Transformer training instabilities", Sec. 3.2): the mean over the grid of
    min(L(lr), L0) - min over the grid of L, L0 the loss at initialization (so a diverged or
    failed run counts as L0, not as infinity). Losses are means over seeds; {} when no
    configuration has a learning-rate tune or sweep of at least two values."""
    out: dict[str, Any] = {}
    for config, names in _curves(study).items():
        points = []
        for name in names:
            runs = study.runs_of(name)
            if not runs or not runs[0].config:
                continue
            initial = [r.score(r.eval_records[0]) for r in runs if r.eval_records]
            if not initial:
                continue
            l0 = _mean(initial)
            losses = [
                min(r.final_score, l0)
                if r.status == "complete" and r.final_score is not None
                else l0
                for r in runs
            ]
            summary = summarize(losses)
            points.append(
                {
                    "learning_rate": _flat(runs[0].config)[SENSITIVITY_FIELD],
                    "run": name,
                    "val_loss": _mean(losses),
                    "ci_low": summary.ci_low if summary else None,
                    "ci_high": summary.ci_high if summary else None,
                    "initial_loss": l0,
                    "failed_seeds": sum(r.status != "complete" for r in runs),
                }
            )
        if len(points) < 2:
            continue
        points.sort(key=lambda p: p["learning_rate"])
        best = min(p["val_loss"] for p in points)
        out[config] = {
            "points": points,
            "best_learning_rate": min(points, key=lambda p: p["val_loss"])["learning_rate"],
            "sensitivity": _mean([min(p["val_loss"], p["initial_loss"]) - best for p in points]),
        }
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def sweep_edges(
    study: StudyData, per_variant: dict[str, dict[str, Any]], floor: float | None
) -> list[dict[str, Any]]:
    """One-factor series whose best value lies at the edge of what was tried.

    The variants that change one numeric field alone (and nothing else), with the baseline,
    form a series of at least three values. When its validation losses are monotone in the
    value, the best lies at one end, and may lie beyond it: the baseline's value is then likely
    under-tuned, and every comparison with the baseline inherits that. A series whose whole
    spread is within the noise floor is not read."""
    base = study.runs_of("baseline")
    if not base or not base[0].config:
        return []
    derived = derived_fields(study)
    series: dict[str, list[str]] = {}
    for variant, changes in (study.study.get("variants") or {}).items():
        if variant not in study.compared:
            continue
        fields = [k for k in changes or {} if k not in NOT_FACTORS and k not in derived]
        if len(fields) == 1:
            series.setdefault(fields[0], []).append(variant)
    out = []
    for name, variants in series.items():
        points = []
        for member in ["baseline", *variants]:
            runs = study.runs_of(member, complete_only=True)
            row = per_variant.get(member) or {}
            if not runs or row.get("n_complete") != row.get("n_seeds") or not row.get("score"):
                break  # a series with a failed member is not read
            value = _flat(runs[0].config).get(name)
            if not _number(value):
                break
            points.append({"variant": member, "value": value, "val_loss": row["score"]})
        else:
            points.sort(key=lambda p: p["value"])
            losses = [p["val_loss"] for p in points]
            if len(points) < 3 or len({p["value"] for p in points}) < len(points):
                continue
            falling = all(a > b for a, b in itertools.pairwise(losses))
            rising = all(a < b for a, b in itertools.pairwise(losses))
            if not (falling or rising):
                continue
            if floor is not None and max(losses) - min(losses) <= floor:
                continue
            best = points[-1] if falling else points[0]
            baseline_value = next(p["value"] for p in points if p["variant"] == "baseline")
            out.append(
                {
                    "field": name,
                    "points": points,
                    "best": best["variant"],
                    "best_value": best["value"],
                    "edge": "highest" if falling else "lowest",
                    "baseline_value": baseline_value,
                    "noise_floor": floor,  # None with one seed: the order is untested
                }
            )
    return out
