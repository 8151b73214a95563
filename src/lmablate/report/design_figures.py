"""Figures of the study's design rather than its results: the learning-rate schedules the
runs trained with, the budget ladder with its power-law fit and compute multipliers, and the
final loss against the learning rate. No torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np
from pydantic import ValidationError

from lmablate.analysis.findings import Analysis
from lmablate.analysis.rundata import StudyData
from lmablate.config.run import TrainConfig
from lmablate.optim.schedules import lr_at
from lmablate.report.format import plain, represented
from lmablate.report.plotting import (
    TEXT,
    bars,
    figure,
    finish,
    in_bytes,
    legend_below,
    legend_columns,
    plain_log,
    value_label,
    variant_styles,
)

SCHEDULE_FIGURE = "learning_rate_schedules.png"
SCHEDULE_FIELDS = (
    "learning_rate",
    "min_lr_ratio",
    "warmup_steps",
    "schedule",
    "decay_fraction",
    "decay_shape",
    "max_steps",
)


def _schedules(study: StudyData) -> dict[str, TrainConfig]:
    """Each variant's resolved train section (its first recorded run's config.json)."""
    out = {}
    for variant in study.variants:
        run = next((r for r in study.runs_of(variant) if r.config), None)
        if run is None:
            continue
        try:
            out[variant] = TrainConfig.model_validate(run.config["train"])
        except ValidationError:  # written by another version: left out of the figure
            continue
    return out


SCALING_FIGURE = "compute_multipliers.png"
SENSITIVITY_FIGURE = "lr_sensitivity.png"


def draw_sensitivity(analysis: Analysis, styles, out: Path) -> dict[str, dict[str, Any]]:
    """Final loss against the learning rate (log x; seeds' 95% intervals where there is a
    spread) per configuration, beside each configuration's sensitivity; nothing without a
    tuned or swept learning rate."""
    curves = analysis.sensitivity
    if not curves:
        return {}
    fig, (left, right) = figure(TEXT, 2, len(curves))
    for config, curve in curves.items():
        points = curve["points"]
        x = [p["learning_rate"] for p in points]
        y = [p["val_loss"] for p in points]
        spread = all(p["ci_low"] is not None for p in points)
        style = styles[config]
        left.errorbar(
            x,
            y,
            yerr=[
                [y_ - p["ci_low"] for p, y_ in zip(points, y, strict=True)],
                [p["ci_high"] - y_ for p, y_ in zip(points, y, strict=True)],
            ]
            if spread
            else None,
            marker=style["marker"],
            linestyle=style["linestyle"],
            capsize=2 if spread else 0,
            color=style["color"],
            markersize=3.5,
            label=config,
        )
    left.set_xscale("log")
    plain_log(left.xaxis)
    rates = sorted({p["learning_rate"] for c in curves.values() for p in c["points"]})
    left.set_xticks(rates, [f"{r:g}" for r in rates])  # the values tried, each labelled
    left.set(
        title="(a) Final loss by learning rate",
        xlabel="peak learning rate",
        ylabel=value_label(analysis),
    )
    names = list(curves)
    bars(right, names, [curves[c]["sensitivity"] for c in names], [None] * len(names), styles)
    unit = "bits/byte" if in_bytes(analysis) else "nats/token"
    right.set(
        title="(b) Learning-rate sensitivity", ylabel=f"mean excess loss on the grid ({unit})"
    )
    legend_below(fig, [left])
    return finish(
        fig,
        out / SENSITIVITY_FIGURE,
        "Final validation loss against the learning rate per configuration (seeds' 95% "
        "intervals where several seeds give a spread), and each configuration's "
        "learning-rate sensitivity",
    )


def draw_scaling(
    study: StudyData, analysis: Analysis, styles, out: Path
) -> dict[str, dict[str, Any]]:
    """The budget ladder's runs and every configuration at its compute. With a usable fit: the
    power law over the ladder's range (never past it) and an arrow to the baseline compute that
    matches each loss. With an unusable one: no fitted line and no multiplier, the rungs' means
    joined as the interpolation between rungs, and arrows to its crossings. Nothing without a
    fit. Numbers in the legend are plain (no scientific notation)."""
    scaling = analysis.scaling
    fit = (scaling or {}).get("fit")
    if not fit:
        return {}
    c0 = fit["C0_flops"]
    usable = fit["usable"]
    rungs = {"baseline", *study.ladder}
    # a two-column legend (its labels say what each arrow reads): rows for 4 columns, doubled
    fig, (ax,) = figure(TEXT, 1, 2 * (len(scaling["multipliers"]) + 2))
    points = [
        (m["total_flops"] / c0, m["score"])
        for m in analysis.per_run
        if m["variant"] in rungs and m["status"] == "complete" and m["total_flops"]
    ]
    ax.scatter(
        *zip(*points, strict=True), color="0.35", s=10, label="baseline budget ladder", zorder=3
    )
    low, high = scaling["ladder_range"]
    if usable:
        grid = np.geomspace(low, high, 200)  # the law is only measured over the ladder
        ax.plot(
            grid,
            fit["E"] + fit["A"] * grid ** (-fit["alpha"]),
            color="0.45",
            linestyle="--",
            label=f"power-law fit, over the ladder: {plain(fit['E'])} + {plain(fit['A'])}"
            f"·(C/C0)^-{plain(fit['alpha'])}",
        )
    else:
        ax.plot(
            [s["relative_compute"] for s in scaling["ladder"]],
            [s["val_loss"] for s in scaling["ladder"]],
            color="0.45",
            linestyle="-",
            linewidth=0.9,
            label="rung means joined (interpolation between rungs)",
        )
    xs = [low, high]
    for variant, row in scaling["multipliers"].items():
        x, y = row["relative_compute"], row["val_loss"]
        if usable:
            target = row["baseline_compute_to_match"]
            if row["multiplier"] is None:
                text = "beyond the fit's floor"
            else:
                text = f"worth {plain(row['multiplier'])}× its compute"
                text += ", extrapolated" if row["extrapolated"] else ""
        else:
            target = row["interpolation"]["baseline_compute_to_match"]
            text = (
                "beyond the ladder"
                if target is None
                else f"ladder reaches its loss at {plain(target)}·C0 (interpolated)"
            )
        style = styles[variant]
        ax.plot(
            [x],
            [y],
            linestyle="none",
            marker=style["marker"],
            color=style["color"],
            markersize=5,
            zorder=4,
            label=f"{represented(variant, row.get('run'))}: {text}",
        )
        xs.append(x)
        if target:
            xs.append(target)
            ax.annotate(
                "",
                xy=(target, y),
                xytext=(x, y),
                arrowprops={"arrowstyle": "->", "color": style["color"], "alpha": 0.6},
            )
    ax.set_xscale("log", base=2)  # ladders double
    ax.set_xlim(min(xs) / 1.3, max(xs) * 1.3)  # arrows do not widen the axes by themselves
    plain_log(ax.xaxis)
    ax.set(
        title="Compute multipliers against the baseline's budget ladder"
        if usable
        else "The baseline's budget ladder (the power law does not hold: no multipliers)",
        xlabel="training compute (multiples of the baseline's)",
        ylabel=f"final {value_label(analysis)}",
    )
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, frameon=False)
    measure = "bits per byte" if in_bytes(analysis) else "loss"
    return finish(
        fig,
        out / SCALING_FIGURE,
        f"Final validation {measure} against training compute: the baseline's budget ladder, its "
        "power-law fit over the ladder's range, and each configuration with an arrow to the "
        "baseline compute that matches its loss"
        if usable
        else f"Final validation {measure} against training compute: the baseline's budget ladder, "
        "whose power-law fit is unusable (no multipliers), its rung means joined in log "
        "compute, and each configuration with an arrow to the baseline compute at which that "
        "interpolation between rungs reaches its loss (none beyond the ladder)",
    )


def _schedule_label(cfg: TrainConfig) -> str:
    floor = f"to {cfg.min_lr_ratio:g}x"
    if cfg.schedule == "wsd":
        return f"wsd, {cfg.decay_shape} decay {floor} over the last {cfg.decay_fraction:.0%}"
    if cfg.schedule == "constant":
        return "constant"
    return f"{cfg.schedule} {floor}"


MAX_NAMED = 3  # variants named in one legend entry; the rest are counted


def _names(variants: list[str]) -> str:
    """The variants one curve stands for, as a legend label of bounded length."""
    if len(variants) <= MAX_NAMED:
        return ", ".join(variants)
    shown = ", ".join(variants[: MAX_NAMED - 1])
    return f"{shown} and {len(variants) - MAX_NAMED + 1} more"


def draw_schedules(study: StudyData, styles, out: Path) -> dict[str, dict[str, Any]]:
    """The learning rate of every update, from the schedule function the runs trained with,
    for every variant whose schedule differs from another's; nothing when all are the same."""
    configs = _schedules(study)
    # variants that share a schedule are one curve, named together in its legend entry
    groups: dict[tuple, list[str]] = {}
    for variant, cfg in configs.items():
        groups.setdefault(tuple(getattr(cfg, f) for f in SCHEDULE_FIELDS), []).append(variant)
    if len(groups) < 2:
        return {}
    # one legend row per curve below the axes: its labels are too long to sit side by side
    fig, (ax,) = figure(TEXT, 1, len(groups) * legend_columns(TEXT))
    # one style per curve (a configuration's own colour would repeat past eight of them)
    curve_styles = variant_styles([same[0] for same in groups.values()])
    for same in groups.values():
        cfg = configs[same[0]]
        steps = np.arange(cfg.max_steps)
        style = curve_styles[same[0]]
        ax.plot(
            steps + 1,
            [lr_at(int(s), cfg) for s in steps],
            color=style["color"],
            linestyle=style["linestyle"],
            label=f"{_names(same)} ({_schedule_label(cfg)})",
        )
    peaks = [c.learning_rate for c in configs.values()]
    if max(peaks) / min(peaks) > 5:
        ax.set_yscale("log")
        plain_log(ax.yaxis)
    ax.set(title="Learning-rate schedules", xlabel="optimizer step", ylabel="learning rate")
    fig.legend(loc="outside lower center", ncols=1, frameon=False)
    return finish(
        fig,
        out / SCHEDULE_FIGURE,
        "Learning rate at every optimizer step for each distinct schedule (the function the "
        "runs trained with; each parameter group scales it by its multiplier)",
    )
