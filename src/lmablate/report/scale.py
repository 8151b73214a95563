"""The Scale section: every configuration at every size of the study's scale axis, the trend
of its difference with compute, how well the smaller sizes' rankings and decisions agree with
the largest, and every verdict that flips (``analysis/scale.py`` computes them); a key-finding
line per flip, and a figure of the final score against compute per configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmablate.analysis.findings import Analysis
from lmablate.report.format import difference_cell, fmt, md_table, measure, sci, setting

SCALE_FIGURE = "scale_comparison.png"


def _interval(low: float | None, high: float | None, spec: str = "+.3f") -> str:
    return "" if low is None else f" [{format(low, spec)}, {format(high, spec)}]"


def scale_findings(analysis: Analysis) -> list[str]:
    """A key-finding line for every verdict that changes between a smaller size and the
    largest (a reversal first), and the decision agreement of the smallest size."""
    scale = analysis.scale
    if not scale or not scale.get("largest"):
        return []
    out = []
    grouped: dict[tuple[str, str, str, bool], list[str]] = {}
    for flip in scale["flips"]:
        key = (flip["configuration"], flip["verdict"], flip["verdict_at_largest"], flip["reversal"])
        grouped.setdefault(key, []).append(flip["size"])
    for (config, verdict, there, reversal), sizes in sorted(
        grouped.items(), key=lambda g: not g[0][3]
    ):
        kind = "Reversal at scale" if reversal else "Verdict changes with scale"
        out.append(
            f"- **{kind}:** {config} is {verdict} at size{'s' if len(sizes) > 1 else ''} "
            f"{', '.join(sizes)} but {there} at {scale['largest']} (the largest); a decision "
            f"from the smaller size{'s' if len(sizes) > 1 else ''} would not hold"
        )
    smallest = scale["sizes"][0]
    agreement = scale["agreement"].get(smallest) or {}
    if agreement.get("decision_agreement") is not None:
        out.append(
            f"- **Decision agreement at scale:** the smallest size ({smallest}) orders "
            f"{agreement['decision_agreement']:.0%} of {agreement['pairs']} configuration "
            f"pairs as the largest ({scale['largest']}) does"
        )
    return out


def scale_section(analysis: Analysis) -> list[str]:
    scale = analysis.scale
    if not scale:
        return []
    out = ["## Scale", ""]
    if not scale.get("largest"):
        return [*out, f"Not available: {scale.get('note')}.", ""]
    sizes, largest = scale["sizes"], scale["largest"]
    per_size = scale["per_size"]
    unit = _scale_measure(analysis)
    out += [
        f"Every configuration trained at {len(sizes)} sizes ({', '.join(sizes)}; token "
        f"budget {scale['tokens']}). At each size the difference is the configuration's "
        f"final {unit} minus the baseline's at the same size, paired by seed, with a 95% "
        "t-interval and a verdict Holm-adjusted over the configurations at that size (the "
        "baseline's seed spread there is its noise floor).",
        "",
        *md_table(
            ["size", "baseline params", "baseline FLOPs", f"baseline {unit}", "noise floor"],
            [
                [
                    size,
                    sci(per_size[size]["baseline_params"]),
                    sci(per_size[size]["baseline_flops"]),
                    fmt((per_size[size]["configurations"]["baseline"]["score"] or {}).get("mean")),
                    fmt(per_size[size]["noise_floor"]),
                ]
                for size in sizes
            ],
        ),
    ]
    if scale.get("learning_rates"):
        out += [
            "Each configuration is tuned at every size on its own (the candidate with the lowest "
            "mean validation score there; every number of this section is then read on the "
            "test documents). The learning rate chosen at each size:",
            "",
            *md_table(
                ["configuration", *sizes],
                [
                    [c, *(setting(lr) if lr is not None else "n/a" for lr in by_size.values())]
                    for c, by_size in scale["learning_rates"].items()
                ],
            ),
        ]
    out += [
        "Difference from the baseline at each size, and its trend with compute (slope per "
        "decade of the baseline's FLOPs, 95% interval; below zero the change gains with "
        "scale):",
        "",
    ]
    rows = []
    for config in scale["configurations"]:
        if config == "baseline":
            continue
        slope = scale["trends"].get(config)
        trend = (
            "n/a"
            if not slope
            else f"{slope['slope']:+.4f}{_interval(slope['ci_low'], slope['ci_high'], '+.4f')}"
        )
        rows.append(
            [
                config,
                *(difference_cell(per_size[s]["comparisons"].get(config)) for s in sizes),
                trend,
            ]
        )
    out += md_table(["configuration", *sizes, "trend per decade"], rows)
    agreement = scale["agreement"]
    out += [
        f"Agreement of each smaller size with the largest ({largest}): Kendall's τ-b of the "
        "configurations' mean scores (95% bootstrap interval over seeds) and decision "
        "agreement, the share of configuration pairs ordered as at the largest size "
        "(Magnusson et al. 2025):",
        "",
        *md_table(
            ["size", "Kendall τ [95% CI]", "decision agreement", "pairs"],
            [
                [
                    size,
                    fmt(row["kendall_tau"], "+.3f")
                    + _interval(row["tau_ci_low"], row["tau_ci_high"]),
                    fmt(row["decision_agreement"], ".0%"),
                    str(row["pairs"]),
                ]
                for size, row in agreement.items()
            ],
        ),
    ]
    if scale["flips"]:
        out += [
            "Verdicts that change between a smaller size and the largest:",
            "",
            *[
                f"- {f['configuration']}: {f['verdict']} at {f['size']}, "
                f"{f['verdict_at_largest']} at {f['largest']}"
                + (" (a reversal)" if f["reversal"] else "")
                for f in scale["flips"]
            ],
            "",
        ]
    else:
        out += ["No verdict changes between sizes.", ""]
    return [*out, f"![Scale]({SCALE_FIGURE})", ""]


def _scale_measure(analysis: Analysis) -> str:
    """What the section's numbers are: with tuning, the chosen runs read on the test split."""
    unit = measure(analysis)
    return unit.replace("validation", "test") if analysis.scale.get("tuned") else unit


def draw_scale(analysis: Analysis, styles, out: Path) -> dict[str, dict[str, Any]]:
    """Final score against training compute per configuration, one point per size (mean over
    seeds, the seeds' 95% interval as error bars), joined in size order; log compute."""
    scale = analysis.scale
    if not scale or not scale.get("largest"):
        return {}
    from matplotlib import ticker

    from lmablate.report import plotting

    label = plotting.value_label(analysis)
    fig, (ax,) = plotting.figure(plotting.COLUMN, 1, len(scale["configurations"]))
    for config in scale["configurations"]:
        points = [
            (row["flops"], row["score"])
            for size in scale["sizes"]
            if (row := scale["per_size"][size]["configurations"][config])["flops"] and row["score"]
        ]
        if not points:
            continue
        style = styles[config]
        means = [s["mean"] for _, s in points]
        lows = [s["ci_low"] if s["ci_low"] is not None else s["mean"] for _, s in points]
        highs = [s["ci_high"] if s["ci_high"] is not None else s["mean"] for _, s in points]
        ax.errorbar(
            [x for x, _ in points],
            means,
            yerr=[
                [m - low for m, low in zip(means, lows, strict=True)],
                [high - m for m, high in zip(means, highs, strict=True)],
            ],
            color=style["color"],
            marker=style["marker"],
            linestyle=style["linestyle"],
            capsize=2,
            markersize=3.5,
            label=config,
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set(
        title="Final score by size",
        xlabel="training FLOPs",
        ylabel=f"final {label.replace('validation', 'test') if scale['tuned'] else label}",
    )
    # 1-2-5 ticks in plain units: the three sizes often lie within one decade
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(plotting.si))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    plotting.legend_below(fig, [ax])
    return plotting.finish(
        fig,
        out / SCALE_FIGURE,
        f"Final {_scale_measure(analysis)} against training compute, each configuration at every "
        f"size ({', '.join(scale['sizes'])}; mean over seeds with the seeds' 95% interval)",
    )
