"""The Compute Multipliers section: the budget ladder's power-law fit and each
configuration's compute multiplier, or, when the fit is unusable, why not and the ladder
interpolated between rungs. Formatting only. No torch.
"""

from __future__ import annotations

from lmablate.analysis.findings import Analysis
from lmablate.report.format import fmt, md_table, measure, plain, represented, sci


def scaling_section(analysis: Analysis) -> list[str]:
    """The budget ladder's power-law fit and each configuration's compute multiplier, or, when
    the fit is unusable (analysis.scaling's verdict), why not and the ladder interpolated."""
    scaling = analysis.scaling
    if not scaling:
        return []
    out = ["## Compute Multipliers", ""]
    fit = scaling.get("fit")
    if fit is None:
        return [*out, f"Not available: {scaling.get('reason')}.", ""]
    se = fit["se"]
    short = measure(analysis, short=True)

    def pm(key: str) -> str:
        return f"{fit[key]:.4g}" + ("" if se[key] is None else f" ± {se[key]:.2g}")

    low, high = scaling["ladder_range"]
    out += [
        "The baseline trained at several budgets (the budget ladder, each rung a full "
        f"schedule) gives its {measure(analysis)} as a function of training compute, fitted by "
        "least squares as L(C) = E + A·(C/C0)^(−α), C0 the baseline's compute "
        f"({sci(fit['C0_flops'])} FLOPs): E = {pm('E')}, A = {pm('A')}, α = {pm('alpha')} "
        f"(± one standard error; {fit['points']} runs, RMS residual {fit['rmse']:.3g} over the "
        f"runs and {fit['rung_rmse']:.3g} over the rung means). The ladder spans "
        f"{plain(low)}–{plain(high)} C0.",
        "",
        *md_table(
            ["rung", "compute (× C0)", "seeds", f"mean {short}", "residual from the fit"],
            [
                [
                    step["variant"],
                    plain(step["relative_compute"]),
                    str(step["seeds"]),
                    fmt(step["val_loss"]),
                    f"{residual:+.4f}",
                ]
                for step, residual in zip(scaling["ladder"], fit["rung_residuals"], strict=True)
            ],
        ),
    ]
    out += _tuned_note(scaling)
    if not fit["usable"]:
        return [
            *out,
            *_unusable_fit(scaling, short),
            "![Budget ladder](compute_multipliers.png)",
            "",
        ]
    out += [
        "A configuration's **compute multiplier** is the baseline compute the fit needs to "
        "reach its final loss, divided by the compute it spent (Ho et al. 2024's effective "
        "compute): above 1 it is worth more than its compute. A multiplier that needs baseline "
        "compute outside the ladder is an extrapolation; a parameter draw whose floor E lies at "
        "or above the loss never reaches it and counts as infinite compute, so an interval's "
        "upper end can be unbounded.",
        "",
    ]
    rows = []
    for variant, row in scaling["multipliers"].items():
        if row["multiplier"] is None:
            value = "none: its loss is at or below the fit's floor E"
        else:
            value = plain(row["multiplier"])
            if row["ci_low"] is not None and row["ci_high"] is not None:
                value += f" [{plain(row['ci_low'])}, {plain(row['ci_high'])}]"
        rows.append(
            [
                represented(variant, row.get("run")),
                fmt(row["val_loss"]),
                plain(row["relative_compute"]),
                plain(row["baseline_compute_to_match"]),
                value,
                "yes" if row["extrapolated"] else "no",
            ]
        )
    out += md_table(
        [
            "configuration",
            short,
            "compute (× C0)",
            "baseline compute to match (× C0)",
            "multiplier [95% CI]",
            "extrapolated",
        ],
        rows,
    )
    sources = {row["interval_from"] for row in scaling["multipliers"].values()}
    out += [f"Intervals: {'; '.join(sorted(sources))}.", ""] if sources else []
    return [*out, "![Compute multipliers](compute_multipliers.png)", ""]


def _tuned_note(scaling: dict) -> list[str]:
    """In a tuned study: which run stands for each configuration, and whether the ladder is the
    baseline's own choice."""
    if not scaling.get("tuned"):
        return []
    out = [
        "Each configuration is converted at its tuned choice (named beside it), at the "
        "validation loss on which that choice was made, so it is slightly flattered by the "
        "choice; the *Tuned Comparison* gives the unbiased test numbers.",
    ]
    if not scaling.get("ladder_is_baseline_choice", True):
        out[0] += (
            " The ladder is the baseline at its written settings, but the baseline's tuned "
            "choice is another value: a multiplier is then measured against an untuned curve."
        )
    return [*out, ""]


def _unusable_fit(scaling: dict, short: str) -> list[str]:
    """Why the fit gives no multiplier, and the interpolation between rungs instead."""
    out = [
        "**No compute multiplier is given: the power law does not describe this ladder** "
        "(a multiplier read off it would carry an interval that assumes the law holds):",
        "",
        *[f"- {problem}" for problem in scaling["fit"]["problems"]],
        "",
        "Instead, an **interpolation between rungs** (not a fit): the baseline compute at which "
        "the rungs' mean losses, joined by straight lines in log compute, first reach each "
        "configuration's loss. It is given only inside the ladder's range; outside it the loss "
        "is beyond the ladder.",
        "",
    ]
    if not scaling["ladder_monotone"]:
        out += [
            "The rungs' mean losses do not fall steadily with compute, so a loss can be "
            "reached at several computes: the interpolation gives the least of them.",
            "",
        ]
    rows = []
    for variant, row in scaling["multipliers"].items():
        interpolation = row["interpolation"]
        beyond = interpolation["beyond_the_ladder"]
        rows.append(
            [
                represented(variant, row.get("run")),
                fmt(row["val_loss"]),
                plain(row["relative_compute"]),
                f"beyond the ladder ({beyond})"
                if beyond
                else plain(interpolation["baseline_compute_to_match"]),
            ]
        )
    return [
        *out,
        *md_table(
            [
                "configuration",
                short,
                "compute (× C0)",
                "baseline compute reaching its loss, interpolated between rungs (× C0)",
            ],
            rows,
        ),
    ]
