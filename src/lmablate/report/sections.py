"""Markdown sections of the report for the statistics and the threats to validity. No torch.

Formatting only; every number comes from ``analysis.Analysis``.
"""

from __future__ import annotations

from typing import Any

from lmablate.analysis.findings import Analysis
from lmablate.analysis.stats import ALPHA
from lmablate.analysis.validity import INDICATIVE, OVERFIT_GAP
from lmablate.report.format import ci, fmt, md_table, measure, sci


def _document_reading(interval: dict) -> str:
    if interval["ci_high"] < 0:
        return "lower"
    if interval["ci_low"] > 0:
        return "higher"
    return "within evaluation noise"


def _document_cell(interval: dict | None) -> str:
    if not interval or "ci_low" not in interval:
        return (interval or {}).get("note", "n/a")
    return f"[{fmt(interval['ci_low'])}, {fmt(interval['ci_high'])}]"


def _document_paragraph(analysis: Analysis) -> list[str]:
    intervals = [i for i in analysis.document_intervals.values() if "documents" in i]
    if not intervals:
        return []
    first = intervals[0]
    return [
        f"Every configuration scores the same {first['targets']:,} validation targets in "
        f"{first['documents']:,} held-out documents, so each difference from the baseline also "
        "has a **paired bootstrap interval over documents** (95%, percentile, "
        f"{first['resamples']:,} resamples of the documents, each bringing both configurations' "
        "losses on its targets). It measures the *evaluation-sample* uncertainty: whether the "
        "difference would hold on other documents from the same source, for these trained "
        "weights. It is not seed variance, and says nothing about whether another seed "
        "would reproduce the difference.",
        "",
    ]


def statistics_section(analysis: Analysis, n_seeds: int) -> list[str]:
    out = ["## Statistical Analysis", ""]
    if n_seeds < 2:
        out += [
            "With one seed per configuration there is no estimate of seed-to-seed "
            "variation: no test across seeds and no noise floor. Rerun the study with "
            "`--seeds 3` (or `seeds: [0, 1, 2]`) to get them.",
            "",
            *_document_paragraph(analysis),
        ]
        if not analysis.document_intervals:
            return out
        rows = []
        for variant, _ in analysis.ranking:
            interval = analysis.document_intervals.get(variant)
            if variant == "baseline" or interval is None:
                continue
            rows.append(
                [
                    variant,
                    fmt(analysis.per_variant[variant]["eval_loss"]),
                    f"{interval['difference']:+.4f}" if "difference" in interval else "n/a",
                    _document_cell(interval),
                    _document_reading(interval) if "ci_low" in interval else "n/a",
                ]
            )
        out += md_table(
            [
                "configuration",
                "val loss",
                "difference to baseline",
                "95% interval (documents)",
                "on these documents",
            ],
            rows,
        )
        return out
    out += [
        f"Mean and 95% confidence interval (t distribution) over {n_seeds} seeds. "
        "Replicate k of every configuration shares its initialization seed and batch "
        "order, so each configuration is compared with the baseline on the per-seed "
        "differences (paired t-test; Welch's t-test where the seeds differ), with "
        f"p-values adjusted for the {len(analysis.comparisons)} comparisons by Holm's "
        "method.",
        "",
    ]
    out += md_table(
        ["configuration", "n", "val loss [95% CI]", "val bpb [95% CI]", "accuracy [95% CI]"],
        [
            [
                v,
                str(analysis.per_variant[v]["n_complete"]),
                ci(analysis.intervals[v]["eval_loss"]),
                ci(analysis.intervals[v]["val_bpb"]),
                ci(analysis.intervals[v]["accuracy"], ".3f"),
            ]
            for v, _ in analysis.ranking
        ],
    )
    floor = analysis.noise_floor
    if floor is not None:
        out += [
            f"**Noise floor:** {floor:.4f} {analysis.findings.get('unit', 'nats per token')} — "
            "the half-width of a 95% "
            "interval for a difference between two configurations with the baseline's "
            "seed-to-seed spread. Differences smaller than this are *within noise* and are "
            "never reported as wins.",
            "",
        ]
    out += [
        "**Against the baseline** (difference = configuration − baseline in validation "
        "loss; negative is better; the seeds' interval, and beside it the interval over "
        "validation documents described below):",
        "",
    ]
    rows = []
    for c in analysis.comparisons:
        interval = f"[{fmt(c.ci_low)}, {fmt(c.ci_high)}]" if c.ci_low is not None else "n/a"
        rows.append(
            [
                c.variant,
                f"{c.difference:+.4f}",
                interval,
                _document_cell(analysis.document_intervals.get(c.variant)),
                c.test,
                fmt(c.statistic, ".2f"),
                fmt(c.df, ".1f"),
                fmt(c.p_value, ".3g"),
                fmt(c.p_holm, ".3g"),
                fmt(c.effect_size, ".2f"),
                f"**{c.verdict}**",
            ]
        )
    out += md_table(
        [
            "configuration",
            "difference",
            "95% CI (seeds)",
            "95% CI (documents)",
            "test",
            "t",
            "df",
            "p",
            "p (Holm)",
            "Cohen's d",
            "verdict",
        ],
        rows,
    )
    out += [
        f"Verdicts: *better* / *worse* — Holm-adjusted p < {ALPHA} and the difference "
        "exceeds the noise floor; *within noise* — the difference is smaller than the noise "
        "floor; *no detectable difference* — the test does not reject; *untested* — fewer "
        "than two seeds on a side.",
        "",
        *_document_paragraph(analysis),
    ]
    return out


MID_SCHEDULE = (
    "A reading at a budget that a run went past is taken mid-schedule: its learning rate had not "
    "decayed yet, so it is worse there than a run of that length would be at its end, and the "
    "view favours shorter runs (Hägele et al. 2024 show that loss curves of different schedule "
    "lengths compare only at their ends). Such columns are *indicative*; "
    "`budget: {match: tokens}` (or `flops`) gives every run a schedule that ends at the same "
    "budget, for an end-of-schedule comparison."
)


def equal_budget_section(analysis: Analysis) -> list[str]:
    budgets = analysis.equal_budgets
    matched = analysis.budget.get("match")
    out = [
        "## Equal-Budget Comparison",
        "",
        "Final losses reward configurations that simply trained more. Here every "
        f"configuration's {measure(analysis)} is read off its evaluation curve (linear "
        "interpolation) at the largest budget that **every** configuration reached.",
        "",
    ]
    if matched:
        steps = analysis.budget.get("max_steps") or {}
        out += [
            f"**Budgets matched on {matched}:** every configuration's schedule ends at the "
            f"baseline's budget ({sci(analysis.budget.get('baseline_budget'))} {matched}; "
            f"{analysis.budget.get('rounding')}), so its final numbers are end-of-schedule "
            f"numbers at equal {matched}. Steps per configuration: "
            + ", ".join(f"{v} {n:,}" for v, n in steps.items())
            + ".",
            "",
        ]
    if not budgets:
        return [*out, "Not available: no complete runs.", ""]
    names = {"tokens": "equal tokens", "flops": "equal FLOPs", "time_s": "equal time"}
    units = {"tokens": "tokens", "flops": "FLOPs", "time_s": "s"}

    def label(budget: str) -> str:
        kind = budgets[budget].get("reading", INDICATIVE)
        return f"{names[budget]} ({sci(budgets[budget]['matched_budget'])} {units[budget]}; {kind})"

    header = ["configuration", *[label(b) for b in budgets]]
    variants = [v for v, _ in analysis.ranking]
    out += md_table(
        header, [[v, *[fmt(budgets[b]["val_loss"].get(v)) for b in budgets]] for v in variants]
    )
    lines = [
        f"- At {names[b]}: best **{budgets[b]['ranking'][0]}** "
        f"({budgets[b].get('reading', INDICATIVE)})"
        for b in budgets
        if budgets[b]["ranking"]
    ]
    indicative = [names[b] for b in budgets if budgets[b].get("reading", INDICATIVE) == INDICATIVE]
    return [
        *out,
        *lines,
        "",
        *(
            [f"Indicative columns: {', '.join(indicative)}. " + MID_SCHEDULE, ""]
            if indicative
            else []
        ),
        "![Equal-budget comparison](equal_budget_comparison.png)",
        "",
    ]


def overlap_paragraph(leak: dict[str, Any]) -> list[str]:
    """The n-gram overlap check in words: thresholds, what it removed or moved, what is left."""
    check = leak.get("overlap")
    if not check:
        return ["No n-gram overlap check was recorded (runs made before it existed).", ""]
    n = check["ngram"]
    moved, dropped = check["moved_to_training"], check["dropped"]
    near = check["near_duplicate_threshold"]
    parts = [
        f"Near-copies: {check['near_duplicates_removed']} documents sharing at least "
        f"{near:.0%} of their distinct {n}-word n-grams with earlier documents were dropped "
        "before the split."
        if near is not None
        else "Near-copies were not removed (data.contamination.near_duplicates: null).",
        f"Overlap: a held-out document sharing more than {check['max_overlap']:.0%} of its "
        f"{n}-grams with training (test: training or validation) is "
        f"{'moved to training' if check['action'] == 'move' else 'dropped'}; "
        + "; ".join(
            f"{side_name}: {moved.get(side, 0) + dropped.get(side, 0)} "
            f"{'moved' if check['action'] == 'move' else 'dropped'}, "
            f"**0** left above the threshold (largest remaining overlap "
            f"{check['largest_overlap_after'][side]:.1%}; "
            f"{check['sharing_any_ngram'][side]} share at least one {n}-gram)"
            for side, side_name in (("val", "validation"), ("test", "test"))
            if side in check["largest_overlap_after"]
        )
        + ".",
    ]
    return [" ".join(parts), ""]


def _leakage_by_configuration(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Each configuration's own training data checked against every evaluation set."""
    if not rows:
        return []

    def removed(row: dict[str, Any]) -> str:
        counts = row.get("training_removed_for_overlap")
        return f"{counts['exact']} exact, {counts['overlap']} by n-grams" if counts else "—"

    def filtered(row: dict[str, Any]) -> str:
        dropped = row.get("filtered")
        return ", ".join(f"{n:,} {why}" for why, n in dropped.items()) if dropped else "—"

    return [
        "Each configuration's own training documents (its mixture, filters and training-only "
        "sources) against every evaluation set: held-out documents found in its training data "
        "(SHA-256), and documents of its training-only sources removed because they repeat or "
        "overlap an evaluation document.",
        "",
        *md_table(
            [
                "configuration",
                "training documents",
                "held-out in training",
                "removed from training-only sources",
                "filtered out",
            ],
            [
                [
                    variant,
                    fmt(row["train_documents"], ",.0f") if row["train_documents"] else "—",
                    str(row["val_documents_in_training"]),
                    removed(row),
                    filtered(row),
                ]
                for variant, row in rows.items()
            ],
        ),
    ]


def validity_section(analysis: Analysis) -> list[str]:
    out = [
        "## Threats to Validity",
        "",
        "### Confounds",
        "",
        "What each configuration changes relative to the baseline, and how its training "
        "budget compares:",
        "",
    ]
    rows = []
    for variant, row in analysis.confounds.items():
        changes = ", ".join(f"{k}={v}" for k, v in row["changes"].items()) or "—"
        rows.append(
            [
                variant,
                changes,
                ", ".join(row["factors"]) or "—",
                "yes" if row["multi_factor"] else "no",
                fmt(row["tokens_ratio"], ".2f"),
                fmt(row["flops_ratio"], ".2f"),
            ]
        )
    out += md_table(
        ["configuration", "changes", "factors", "confounded", "tokens ×", "FLOPs ×"], rows
    )
    for variant, row in analysis.confounds.items():
        out += [f"- **{variant}** {w}." for w in row["warnings"]]
    if analysis.study_threats:
        out += ["", "### Tuning", ""]
        out += [f"- {threat}" for threat in analysis.study_threats]
    out += [
        "",
        "### Overfitting",
        "",
        "Flagged per seed: a generalization gap (final validation loss − final training loss) "
        f"above **{OVERFIT_GAP} nats per token**, whether or not validation loss still falls, "
        "or validation loss rising between two evaluations while training loss fell.",
        "",
    ]
    out += md_table(
        ["configuration", "epochs", "val − train loss", "flags"],
        [
            [
                v,
                fmt(o["epochs"], ".2f"),
                fmt(o["val_minus_train_loss"], "+.4f"),
                "; ".join(o["flags"]) or "no",
            ]
            for v, o in analysis.overfitting.items()
        ],
    )
    out += [
        "The training loss is the mean over the last 10% of logged steps, so it lags the "
        "weights the validation loss was measured on; a small negative gap is expected "
        "early in training.",
        "",
        "### Leakage",
        "",
    ]
    leak = analysis.leakage
    if leak.get("checked"):
        docs = leak["documents"]
        out += [
            f"**{leak['val_documents_in_training']}** of {docs['val']} validation documents "
            f"appear in the {docs['train']} training documents ({leak['method']}); "
            f"{leak['duplicates_removed']} exact "
            f"{'repeat was' if leak['duplicates_removed'] == 1 else 'repeats were'} removed "
            "from the corpus before the split."
            + (
                f" **{leak['test_documents_in_training_or_validation']}** of the "
                f"{docs['test']} test documents appear in training or validation."
                if leak.get("test_documents_in_training_or_validation") is not None
                else ""
            ),
            "",
            *overlap_paragraph(leak),
            *_leakage_by_configuration(leak.get("by_configuration") or {}),
        ]
    else:
        out += ["Not recorded by these runs.", ""]
    out += ["### Provenance", ""]
    out += md_table(
        [
            "run",
            "config hash",
            "data cache",
            "seed / data seed",
            "tokens",
            "FLOPs",
            "device",
            "torch",
            "git",
        ],
        [
            [
                f"{p['variant']}/seed-{p['seed']}",
                p["config_hash"] or "—",
                p["data_cache_key"] or "—",
                f"{p['seed']} / {p['data_seed']}",
                fmt(p["tokens"], ",.0f") if p["tokens"] else "—",
                sci(p["flops"]) if p["flops"] else "—",
                p["device"] or "—",
                p["torch"] or "—",
                (p["git_sha"] or "—")[:10],
            ]
            for p in analysis.provenance
        ],
    )
    return out
