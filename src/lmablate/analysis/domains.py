"""Per-domain results: every run scores every evaluation set of the study (the held-out
documents of each source), and this compares the configurations set by set.

Everything here is in bits per byte of the same evaluation bytes, which does not depend on
the tokenizer (nats per token do: a tokenizer with longer tokens has fewer, harder targets).
Per set and for the macro-average (the unweighted mean of the sets' bpb, so a small domain
counts as much as a large one): each configuration's mean over seeds with its interval, its
difference from the baseline with a paired interval over seeds, and a verdict, Holm-adjusted
over the configurations within that set, with the baseline's own seed spread on that set as
the noise floor. Tokens per byte of each configuration's tokenizer on each set are reported
beside them. No torch.
"""

from __future__ import annotations

import math
from typing import Any

from lmablate.analysis.rundata import StudyData
from lmablate.analysis.stats import compare, noise_floor, summarize, with_verdicts

MACRO = "macro-average"


def _bpb_by_set(summary: dict[str, Any] | None, key: str = "final_val_sets") -> dict[str, float]:
    sets = (summary or {}).get(key) or {}
    return {
        name: record["bpb"]
        for name, record in sets.items()
        if isinstance(record, dict)
        and isinstance(record.get("bpb"), int | float)
        and math.isfinite(record["bpb"])
    }


def tokenizer_threat(study: StudyData) -> str | None:
    """A warning when configurations differ in tokenizer: their nats per token, and everything
    ranked on them, are not comparable."""
    used = study.tokenizers
    if len(set(used.values())) < 2:
        return None
    base = used.get("baseline")
    others = sorted(v for v, t in used.items() if t != base)
    return (
        f"{', '.join(others)} use(s) a different tokenizer from the baseline ({base}): losses in "
        "nats per token compare different targets and are not comparable across tokenizers, "
        "so every ranking, test, efficiency reading and figure of this study is in bits per "
        "byte of the same evaluation bytes; the nats-per-token columns are each "
        "configuration's own tokenizer's."
    )


def per_domain(study: StudyData) -> dict[str, Any]:
    """The per-domain table (empty for a study with one evaluation set), on the validation
    documents and, where the runs scored them, on the test documents of every set."""
    base_runs = study.runs_of("baseline", complete_only=True)
    sets = sorted({name for r in base_runs for name in _bpb_by_set(r.summary)})
    if len(sets) < 2:
        return {}
    table, tokens_per_byte = _split_table(study, sets, "final_val_sets")
    out = {
        "sets": sets,
        "metric": "bits per byte of the same held-out bytes (final evaluation), mean over seeds",
        "macro_average": "the unweighted mean of the sets' bits per byte, per run",
        "table": table,
        "tokens_per_byte": tokens_per_byte,
    }
    if all(set(sets) <= set(_bpb_by_set(r.summary, "final_test_sets")) for r in base_runs):
        out["test"] = _split_table(study, sets, "final_test_sets")[0]
    return out


def _split_table(
    study: StudyData, sets: list[str], key: str
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Per set and the macro-average: each configuration's bpb over seeds and its paired
    difference from the baseline with Holm verdicts within the set; and tokens per byte."""
    names = [*sets, MACRO]
    per_seed: dict[str, dict[str, dict[int, float]]] = {}
    tokens_per_byte: dict[str, dict[str, float]] = {}
    for variant in study.compared:
        values: dict[str, dict[int, float]] = {name: {} for name in names}
        for run in study.runs_of(variant, complete_only=True):
            bpb = _bpb_by_set(run.summary, key)
            if set(sets) - set(bpb):
                continue  # a run that did not score every set is left out, not half-counted
            for name in sets:
                values[name][run.seed] = bpb[name]
            values[MACRO][run.seed] = sum(bpb[name] for name in sets) / len(sets)
            records = run.summary[key]
            tokens_per_byte.setdefault(
                variant,
                {
                    name: records[name]["targets"] / records[name]["bytes"]
                    for name in sets
                    if records[name].get("bytes")
                },
            )
        per_seed[variant] = values
    table: dict[str, Any] = {}
    for name in names:
        base = per_seed.get("baseline", {}).get(name, {})
        floor = noise_floor(list(base.values()))
        comparisons = with_verdicts(
            [
                compare(v, per_seed[v][name], base)
                for v in study.compared
                if v != "baseline" and per_seed.get(v, {}).get(name) and base
            ],
            floor,
        )
        by_variant = {c.variant: c.as_dict() for c in comparisons}
        rows = {}
        for variant in study.compared:
            seeds = per_seed.get(variant, {}).get(name, {})
            summary = summarize(list(seeds.values()))
            rows[variant] = {
                "bpb": summary.as_dict() if summary else None,
                "n": len(seeds),
                "vs_baseline": by_variant.get(variant),
            }
        table[name] = {"noise_floor": floor, "configurations": rows}
    return table, tokens_per_byte
