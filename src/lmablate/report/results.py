"""The report's result sections: key findings, the performance, efficiency and convergence
tables and runs that did not complete (the generated text: generations.py; tuning: tuning.py).
Formatting only; every number comes from ``analysis`` or research_data.json. No torch.
"""

from __future__ import annotations

from typing import Any

from lmablate.analysis.findings import Analysis
from lmablate.analysis.metrics import CONVERGED_TOLERANCE
from lmablate.analysis.validity import INDICATIVE
from lmablate.report.efficiency import (
    efficiency_findings,
    efficiency_rule,
    flops_interval,
    target_levels_table,
)
from lmablate.report.format import (
    fmt,
    md_table,
    measure,
    pm,
    sci,
    without_empty_columns,
)
from lmablate.report.references import reference_findings, reference_line
from lmablate.report.scale import scale_findings
from lmablate.report.tuning import tuned_findings


def _budget_caveat(best: str, table: dict[str, dict[str, Any]]) -> list[str]:
    """Flag a winner that simply trained on more: more compute is not a better recipe."""
    base = table.get("baseline", {}).get("total_flops")
    mine = table[best]["total_flops"]
    if best == "baseline" or not base or not mine or mine <= 1.05 * base:
        return []
    return [
        f"- **Note:** {best} used {mine / base:.2f}x the baseline's training compute "
        f"({table[best]['tokens_seen']:,.0f} tokens against "
        f"{table['baseline']['tokens_seen']:,.0f}); compare at equal compute under "
        "*Efficiency* before crediting its recipe, or rerun the study with "
        "`budget: {match: flops}` so every schedule ends at the baseline's compute."
    ]


def _edge_finding(edge: dict[str, Any]) -> str:
    """A one-factor series whose best value lies at its edge: the baseline is likely
    under-tuned in that field, and every comparison with it inherits that."""
    field, points = edge["field"], edge["points"]
    order = " > ".join(f"{p['variant']} ({p['value']:g}): {fmt(p['val_loss'])}" for p in points)
    if edge["edge"] == "lowest":
        order = " < ".join(f"{p['variant']} ({p['value']:g}): {fmt(p['val_loss'])}" for p in points)
    at_baseline = edge["best"] == "baseline"
    consequence = (
        f"the baseline's own {field} is the best tried but sits at the edge, so a value "
        "beyond it may do better still"
        if at_baseline
        else f"the baseline's {field} ({edge['baseline_value']:g}) is likely under-tuned, and "
        "every other variant's comparison with the baseline inherits that"
    )
    return (
        f"- **Edge of a sweep ({field}):** validation loss is monotone in {field} "
        f"({order}), best at the {edge['edge']} value tried ({edge['best']}, "
        f"{edge['best_value']:g}); the best {field} may lie beyond it: {consequence}. Extend "
        f"the values, or tune it for every configuration (tune: {{{field}: [...]}})."
        + (
            " With one seed this order is not tested against seed-to-seed variation; rerun "
            "with --seeds 3 before acting on it."
            if edge.get("noise_floor") is None
            else ""
        )
    )


def key_findings(analysis: Analysis, n_seeds: int) -> list[str]:
    findings, table = analysis.findings, analysis.per_variant
    lowest = findings["lowest_mean_val_loss_config"]
    if lowest is None:
        return ["- No configuration completed; see *Runs that did not complete*."]
    metric = findings.get("metric", "eval_loss")
    unit = findings.get("unit", "nats per token")
    named = measure(analysis, short=True).replace("val ", "validation ")
    interval = analysis.intervals[lowest][metric]
    ci = (
        f", 95% CI [{fmt(interval['ci_low'])}, {fmt(interval['ci_high'])}]"
        if interval and interval["ci_low"] is not None
        else ""
    )
    best = findings["best_performing_config"]
    floor = findings["noise_floor"]
    out = tuned_findings(analysis)
    if best.startswith("tied: "):
        out.append(
            f"- **Best Performing Configuration:** {best} — their mean {named} "
            f"values lie within the noise floor ({floor:.4f}) of the lowest, "
            f"{lowest} ({fmt(table[lowest][metric])}{ci})"
        )
    else:
        gap = findings["runner_up_gap"]
        beyond = (
            f"; {fmt(gap)} below the runner-up, beyond the noise floor {floor:.4f}"
            if floor is not None and gap is not None
            else ""
        )
        out.append(
            f"- **Best Performing Configuration:** {best} ({named} "
            f"{fmt(table[best][metric])}{ci}{beyond})"
        )
    worst = findings["worst_performing_config"]
    out += [
        f"- **Worst Performing Configuration:** {worst} ({named} "
        f"{pm(table[worst][metric], table[worst][f'{metric}_std'])}); gap "
        f"{fmt(findings['performance_gap'])} {unit}",
    ]
    out += efficiency_findings(analysis)
    if findings["not_reaching_target"]:
        out.append(
            "- **Not placed on efficiency:** "
            f"{', '.join(findings['not_reaching_target'])} (its seed-mean curve never gets "
            f"down to the ranking target {fmt(analysis.target_loss)})"
        )
    if analysis.efficiency.get("at_start"):
        out.append(
            "- **Not placed on efficiency:** "
            f"{', '.join(analysis.efficiency['at_start'])} (its step-0 evaluation is already at "
            "the ranking target: training never took it below its initial loss)"
        )
    if findings["best_at_equal_compute"]:
        out.append(
            f"- **Best at equal compute:** {findings['best_at_equal_compute']} (lowest "
            f"{measure(analysis)} at the FLOPs every configuration reached; "
            f"{_equal_reading(analysis)}, see Equal-Budget Comparison)"
        )
    out += reference_findings(analysis)
    out += scale_findings(analysis)
    out += _budget_caveat(lowest, table)
    out += [_edge_finding(edge) for edge in analysis.sweep_edges]
    verdicts = [f"{c.variant} {c.verdict} ({c.difference:+.4f})" for c in analysis.comparisons]
    if n_seeds >= 2 and verdicts:
        out.append(f"- **Against the baseline:** {'; '.join(verdicts)}")
    efficiency = (
        f"efficiency is {findings['efficiency_measure']}, target {fmt(findings['target_val_loss'])}"
    )
    out.append(f"- **Measures:** performance is the {findings['ranking_metric']}; {efficiency}.")
    if n_seeds < 2:
        out.append(
            "- **Caution:** one seed per configuration. Differences smaller than the "
            "seed-to-seed variation cannot be told from noise; rerun with `--seeds 3` "
            "before claiming a small difference."
        )
    return out


def _equal_reading(analysis: Analysis) -> str:
    reading = (analysis.equal_budgets.get("flops") or {}).get("reading", INDICATIVE)
    if reading != INDICATIVE:
        if analysis.budget.get("match") == "flops":
            return f"{reading}: budgets matched on FLOPs"
        return f"{reading}: every compared run ends at these FLOPs"
    return "mid-schedule for the longer runs, so indicative"


def results_tables(analysis: Analysis) -> list[str]:
    """Performance (ranked by validation loss), efficiency, convergence, unfinished runs."""
    table_rows = analysis.per_variant
    out: list[str] = []
    out += [
        "## Results Summary",
        "",
        "### Performance Metrics",
        "Configurations ranked by final validation loss on held-out documents "
        "(mean ± standard deviation over seeds where there are several), with the final "
        "training loss (mean of the last 10% of logged steps) beside it:",
        "",
    ]
    rows = []
    for rank, (variant, _) in enumerate(analysis.ranking, 1):
        row = table_rows[variant]
        rows.append(
            [
                str(rank),
                f"**{variant}**",
                pm(row["eval_loss"], row["eval_loss_std"]),
                fmt(row["val_bpb"]),
                fmt(row["train_loss"]),
                fmt(row["accuracy"], ".3f"),
                fmt(row["top5_accuracy"], ".3f"),
                fmt(row["perplexity"], ".1f"),
                f"{row['tokens_seen']:,.0f}",
                fmt(row["epochs"], ".2f"),
                f"{row['params'] / 1e6:.2f}M",
            ]
        )
    out += md_table(
        [
            "rank",
            "configuration",
            "val loss",
            "val bpb",
            "train loss",
            "accuracy",
            "top-5",
            "perplexity",
            "tokens",
            "epochs",
            "params",
        ],
        rows,
    )
    out += reference_line(analysis)

    equal = analysis.equal_budgets.get("flops") or {}
    matched = equal.get("matched_budget")
    out += [
        "### Efficiency",
        f"Compute and training time to reach the ranking target {measure(analysis)} "
        f"{fmt(analysis.target_loss)}. {efficiency_rule()} Beside it, the {measure(analysis)} at "
        "the largest training compute every configuration reached "
        f"({sci(matched) if matched else 'n/a'} FLOPs; {_equal_reading(analysis)}). "
        "Throughput and MFU are measured with the device synchronized. Steps per second are "
        "shown for completeness only: they ignore how much each step learns and are never used "
        "to rank.",
        "",
    ]
    placed = analysis.efficiency.get("configurations") or {}
    rows = []
    for variant, _ in analysis.efficiency_ranking:
        row = table_rows[variant]
        share = (placed.get(variant) or {}).get("share_of_run")
        rows.append(
            [
                variant,
                flops_interval(placed.get(variant)),
                fmt(share, ".0%"),
                fmt(row["time_to_target"], ".1f"),
                fmt((equal.get("val_loss") or {}).get(variant)),
                sci(row["total_flops"]),
                f"{fmt(row['tokens_per_s'], ',.0f')}",
                fmt(row["mfu"], ".1%") if row["mfu"] is not None else "n/a",
                fmt(row["wall_time"], ".1f"),
                fmt(row["efficiency_steps_per_second"], ".2f"),
            ]
        )
    out += md_table(
        *without_empty_columns(
            [
                "configuration",
                "FLOPs to target [95% CI]",
                "reached at (share of run)",
                "train s to target",
                f"{measure(analysis, short=True)} at equal FLOPs"
                + (
                    " (indicative)"
                    if equal.get("reading", INDICATIVE) == INDICATIVE
                    else " (end of schedule)"
                ),
                "total FLOPs",
                "tokens/s",
                "MFU",
                "wall s",
                "steps/s",
            ],
            rows,
        )
    )
    out += target_levels_table(analysis)

    out += [
        "### Convergence",
        "Relative validation-loss improvement from step 0 to the end; mean training loss in "
        "the first and last 10% of logged steps; the late slope: a least-squares line through "
        "the (seed-mean) logged training loss over the last fifth of the tokens, in loss per "
        "million tokens with its 95% interval from the scatter about the line, and the drop "
        "it amounts to over that fifth. *Still falling* means the interval lies below zero: "
        "more training would have lowered the loss further, and a ranking at this budget may "
        "not hold at a longer one. *Converged* is stated only when the interval excludes a "
        "meaningful decline: its lower end lies above the slope that would lower the loss by "
        f"{CONVERGED_TOLERANCE} nats over that last fifth (and the loss is not rising); a run "
        "whose interval includes such a decline is *still falling* (the interval lies below "
        "zero) or *undetermined* (it does not), never converged.",
        "",
    ]

    def slope_cells(row: dict[str, Any]) -> list[str]:
        slope = row["late_slope"]
        if slope is None:
            return ["n/a", "n/a", "n/a", row["convergence"]]
        interval = (
            f" [{slope['ci_low']:+.3g}, {slope['ci_high']:+.3g}]"
            if slope["ci_low"] is not None
            else ""
        )
        return [
            f"{slope['slope']:+.3g}{interval}",
            fmt(slope["drop"]),
            slope["reading"],
            row["convergence"],
        ]

    out += md_table(
        [
            "configuration",
            "improvement",
            "early loss",
            "late loss",
            "late slope (per M tokens)",
            "drop over last fifth",
            "reading",
            f"converged (tolerance {CONVERGED_TOLERANCE} nats)",
        ],
        [
            [
                v,
                fmt(table_rows[v]["convergence_total_improvement"], ".1%"),
                fmt(table_rows[v]["convergence_early_phase_loss"]),
                fmt(table_rows[v]["convergence_late_phase_loss"]),
                *slope_cells(table_rows[v]),
            ]
            for v, _ in analysis.ranking
        ],
    )

    unfinished = [m for m in analysis.per_run if m["status"] != "complete"]
    if unfinished:
        out += ["### Runs that did not complete", ""]
        out += md_table(
            ["configuration", "seed", "status", "reason"],
            [[m["variant"], str(m["seed"]), m["status"], m["message"] or "—"] for m in unfinished],
        )

    return out
