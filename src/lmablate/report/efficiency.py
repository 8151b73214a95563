"""The report's efficiency claims in words: the key finding (stated only beyond the seeds'
uncertainty, at a target every placed configuration reaches late), the rule, and the table of
target levels. Formatting only; the numbers come from ``analysis.efficiency``. No torch.
"""

from __future__ import annotations

from typing import Any

from lmablate.analysis.efficiency import LATE_REACH_FRACTION, RULE
from lmablate.analysis.findings import Analysis
from lmablate.report.format import fmt, md_table, measure, sci


def flops_interval(row: dict[str, Any] | None, why: bool = True) -> str:
    """FLOPs to the target with the seeds' 95% interval, or (``why``) why there is none."""
    if not row:
        return "not reached"
    if row["ci_low"] is None:
        return f"{sci(row['flops'])} ({row['note']})" if why else sci(row["flops"])
    return f"{sci(row['flops'])} [{sci(row['ci_low'])}, {sci(row['ci_high'])}]"


def _where(efficiency: dict[str, Any]) -> str:
    if efficiency["late"]:
        return (
            "which every configuration placed on it reaches in the last "
            f"{1 - LATE_REACH_FRACTION:.0%} of its run"
        )
    early = ", ".join(
        f"{v} at {efficiency['configurations'][v]['share_of_run']:.0%} of its run"
        for v in efficiency["early"]
    )
    return f"read mid-schedule for {early}, so indicative"


def efficiency_findings(analysis: Analysis) -> list[str]:
    """The efficiency key finding: *Most Efficient* only when the runner-up's extra compute is
    beyond the seeds' interval and every placed configuration reaches the target late;
    otherwise the fewest-FLOPs configuration is named and why it is not a finding."""
    efficiency = analysis.efficiency
    ranking = [v for v, _ in analysis.efficiency_ranking]
    if not efficiency or not ranking:
        return []
    best = ranking[0]
    amount = (
        f"{flops_interval(efficiency['configurations'][best], why=False)} training FLOPs to "
        "reach the "
        f"target {measure(analysis, short=True).removeprefix('val ')} "
        f"{fmt(efficiency['target'])}, {_where(efficiency)}"
    )
    margin = efficiency["margin"]
    if margin is None:
        return [f"- **Efficiency:** only {best} is placed ({amount}); nothing to compare."]
    runner, ratio = margin["runner_up"], margin["ratio"]
    versus = f"the runner-up {runner} needs {ratio:.2f}x as much"
    if efficiency["finding"]:
        return [
            f"- **Most Efficient Configuration:** {best} ({amount}; {versus}, 95% interval of "
            f"that ratio over seeds [{margin['ratio_ci_low']:.3g}, "
            f"{margin['ratio_ci_high']:.3g}], beyond the seeds' uncertainty)",
            f"- **Least Efficient Configuration** (of those placed): "
            f"{analysis.findings['least_efficient_config']}",
        ]
    seeds = len(efficiency["configurations"][best]["seed_flops"])
    if margin["verdict"] == "untested":
        reason = (
            f"with one seed the margin ({ratio - 1:.1%}) is not tested against seed-to-seed "
            "variation, so it is untested and not a finding; rerun with --seeds 3"
            if seeds < 2
            else f"the margin is untested ({margin['note']}), so it is not a finding"
        )
    elif margin["verdict"] == "within uncertainty":
        reason = (
            f"the seeds' 95% interval of that ratio [{margin['ratio_ci_low']:.3g}, "
            f"{margin['ratio_ci_high']:.3g}] reaches 1: no configuration is more efficient "
            "beyond seed noise"
        )
    else:
        reason = (
            f"a reading in the first {LATE_REACH_FRACTION:.0%} of a run is taken before its "
            "schedule annealed, so this is not a finding"
        )
    return [
        f"- **Fewest FLOPs to the target (not a finding):** {best} ({amount}; {versus}); {reason}."
    ]


def efficiency_rule() -> str:
    """The rule, for the efficiency section and the measures line."""
    return (
        f"{RULE[0].upper()}{RULE[1:]}. At the common target alone the worst configuration would "
        "be read at its end (last by construction) and better ones in their first "
        "evaluations, half-way down a schedule that has not annealed; a configuration that "
        "never gets down to the ranking target is listed as not reaching it. Each "
        "configuration's interval is the seeds' 95% t-interval of log compute to the target, "
        "each seed read off its own curve; *most efficient* is stated only when the runner-up's "
        "extra compute lies beyond the seeds' interval (paired over seeds, on log compute)."
    )


def target_levels_table(analysis: Analysis) -> list[str]:
    """FLOPs to every target level per configuration, with where in its run it got there."""
    efficiency = analysis.efficiency
    if not efficiency:
        return []
    levels = efficiency["levels"]
    chosen = efficiency["target_index"]
    header = ["configuration"] + [
        f"{fmt(level['val_loss'])}"
        + {(True, True): " (common and ranking target)", (True, False): " (common target)"}.get(
            (i == 0, i == chosen), " (ranking target)" if i == chosen else ""
        )
        for i, level in enumerate(levels)
    ]
    rows = []
    for variant in levels[0]["flops"]:
        cells = []
        for level in levels:
            flops, share = level["flops"][variant], level["share_of_run"][variant]
            cells.append("not reached" if flops is None else f"{sci(flops)} ({share:.0%})")
        rows.append([variant, *cells])
    return [
        "Training FLOPs to each target level (in brackets: where in its own run the "
        "configuration reaches it, as a share of its tokens; under "
        f"{LATE_REACH_FRACTION:.0%} is a mid-schedule reading):",
        "",
        *md_table(header, rows),
    ]
