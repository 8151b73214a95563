"""Figures of a study, drawn from the analysis tables with matplotlib's Agg backend. No torch.

Every figure has a title, axis labels with units and a legend. Curves of a variant with
several complete seeds are the mean over seeds, with the seeds' range shaded.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker
from pydantic import ValidationError

from lmablate.analysis.findings import Analysis
from lmablate.analysis.rundata import RunData, StudyData, eval_curve
from lmablate.analysis.validity import BUDGETS
from lmablate.config.run import TrainConfig
from lmablate.optim.schedules import lr_at

LOSS = "loss (nats / token)"
FIGURES = {
    "training_loss_comparison.png": "Training and validation loss against tokens seen",
    "final_performance_comparison.png": "Final validation loss, bits per byte, accuracy and "
    "top-5 accuracy per configuration (training loss beside validation loss)",
    "efficiency_analysis.png": "Validation loss against training compute, compute to reach the "
    "target loss, and throughput",
    "convergence_analysis.png": "Validation loss by step, and how fast it was still falling "
    "(loss drop per million tokens between evaluations)",
    "val_loss_vs_tokens.png": "Validation loss against tokens seen (equal-data view)",
    "val_loss_vs_time.png": "Validation loss against training time (equal-time view)",
    "equal_budget_comparison.png": "Validation loss against tokens, training FLOPs and "
    "training time on shared axes, with the budget every variant reached marked",
}
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


def draw_sensitivity(study: StudyData, analysis: Analysis, out: Path) -> dict[str, str]:
    """Final loss against the learning rate (log x; seeds' 95% intervals as error bars) per
    configuration, beside each configuration's sensitivity; nothing without a tuned or swept
    learning rate."""
    curves = analysis.sensitivity
    if not curves:
        return {}
    colors = _colors(study.variants)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=[2, 1])
    for config, curve in curves.items():
        x = [p["learning_rate"] for p in curve["points"]]
        y = [p["val_loss"] for p in curve["points"]]
        low = [
            y_ - (p["ci_low"] if p["ci_low"] is not None else y_)
            for p, y_ in zip(curve["points"], y, strict=True)
        ]
        high = [
            (p["ci_high"] if p["ci_high"] is not None else y_) - y_
            for p, y_ in zip(curve["points"], y, strict=True)
        ]
        left.errorbar(
            x, y, yerr=[low, high], marker="o", capsize=3, color=colors[config], label=config
        )
    left.set_xscale("log")
    left.set(
        title="Final validation loss against learning rate",
        xlabel="peak learning rate",
        ylabel=LOSS,
    )
    left.legend(fontsize=8)
    left.grid(alpha=0.3, which="both")
    names = list(curves)
    right.bar(names, [curves[c]["sensitivity"] for c in names], color=[colors[c] for c in names])
    right.set(
        title="Learning-rate sensitivity",
        ylabel="mean excess loss over the grid (nats)",
    )
    right.tick_params(axis="x", rotation=30)
    right.grid(alpha=0.3, axis="y")
    _finish(fig, out / SENSITIVITY_FIGURE)
    return {
        SENSITIVITY_FIGURE: "Final validation loss against the learning rate per configuration "
        "(seeds' 95% intervals), and each configuration's learning-rate sensitivity"
    }


def draw_scaling(study: StudyData, analysis: Analysis, out: Path) -> dict[str, str]:
    """The budget ladder's runs, its power-law fit, and every configuration at its compute,
    with an arrow to the baseline compute that matches its loss; nothing without a fit."""
    scaling = analysis.scaling
    fit = (scaling or {}).get("fit")
    if not fit:
        return {}
    c0 = fit["C0_flops"]
    rungs = {"baseline", *study.ladder}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = [
        (m["total_flops"] / c0, m["eval_loss"])
        for m in analysis.per_run
        if m["variant"] in rungs and m["status"] == "complete" and m["total_flops"]
    ]
    ax.scatter(
        *zip(*points, strict=True), color="0.2", s=18, label="baseline budget ladder", zorder=3
    )
    low, high = scaling["ladder_range"]
    needed = [r["baseline_compute_to_match"] for r in scaling["multipliers"].values()]
    span = [
        low,
        high,
        *[c for c in needed if c],
        *[r["relative_compute"] for r in scaling["multipliers"].values()],
    ]
    grid = np.geomspace(min(span) / 1.5, max(span) * 1.5, 200)
    ax.plot(
        grid,
        fit["E"] + fit["A"] * grid ** (-fit["alpha"]),
        color="0.4",
        linestyle="--",
        label=f"fit: {fit['E']:.3g} + {fit['A']:.3g}·C^-{fit['alpha']:.3g}",
    )
    colors = _colors(study.variants)
    for variant, row in scaling["multipliers"].items():
        x, y = row["relative_compute"], row["val_loss"]
        text = "beyond fit" if row["multiplier"] is None else f"{row['multiplier']:.2g}x"
        ax.scatter([x], [y], color=colors[variant], s=40, zorder=4, label=f"{variant} ({text})")
        if row["baseline_compute_to_match"]:
            ax.annotate(
                "",
                xy=(row["baseline_compute_to_match"], y),
                xytext=(x, y),
                arrowprops={"arrowstyle": "->", "color": colors[variant], "alpha": 0.6},
            )
    ax.set_xscale("log", base=2)  # ladders double
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set(
        title="Compute multipliers against the baseline's budget ladder",
        xlabel="training compute (multiples of the baseline's)",
        ylabel=LOSS,
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    _finish(fig, out / SCALING_FIGURE)
    return {
        SCALING_FIGURE: "Final validation loss against training compute: the baseline's budget "
        "ladder, its power-law fit, and each configuration with an arrow to the baseline compute "
        "that matches its loss"
    }


def _schedule_label(cfg: TrainConfig) -> str:
    floor = f"to {cfg.min_lr_ratio:g}x"
    if cfg.schedule == "wsd":
        return f"wsd, {cfg.decay_shape} decay {floor} over the last {cfg.decay_fraction:.0%}"
    if cfg.schedule == "constant":
        return "constant"
    return f"{cfg.schedule} {floor}"


def draw_schedules(study: StudyData, out: Path) -> dict[str, str]:
    """The learning rate of every update, from the schedule function the runs trained with,
    for every variant whose schedule differs from another's; nothing when all are the same."""
    configs = _schedules(study)
    # variants that share a schedule are one curve, named together in its legend entry
    groups: dict[tuple, list[str]] = {}
    for variant, cfg in configs.items():
        groups.setdefault(tuple(getattr(cfg, f) for f in SCHEDULE_FIELDS), []).append(variant)
    if len(groups) < 2:
        return {}
    colors = _colors(study.variants)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for same in groups.values():
        variant, cfg = same[0], configs[same[0]]
        steps = np.arange(cfg.max_steps)
        ax.plot(
            steps + 1,
            [lr_at(int(s), cfg) for s in steps],
            color=colors[variant],
            label=", ".join(same) + f" ({_schedule_label(cfg)})",
            linewidth=1.5,
        )
    peaks = [c.learning_rate for c in configs.values()]
    if max(peaks) / min(peaks) > 5:
        ax.set_yscale("log")
    ax.set(
        title="Learning-rate schedules",
        xlabel="optimizer step",
        ylabel="learning rate",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _finish(fig, out / SCHEDULE_FIGURE)
    return {
        SCHEDULE_FIGURE: "Learning rate at every optimizer step for each distinct schedule "
        "(the function the runs trained with; each parameter group scales it by its multiplier)"
    }


def _colors(variants: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {v: cmap(i % 10) for i, v in enumerate(variants)}


def _mean_series(
    runs: list[RunData], points: Callable[[RunData], list[tuple[float, float]]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """x, mean y, min y, max y over runs: on the x values every run has (steps, tokens), or,
    where the runs' x values differ (seconds), interpolated onto the range they all cover."""
    series = [dict(points(r)) for r in runs]
    series = [s for s in series if s]
    if not series:
        return None
    shared = sorted(set.intersection(*(set(s) for s in series)))
    if len(shared) >= min(len(s) for s in series):
        ys = np.array([[s[x] for x in shared] for s in series], dtype=float)
        return np.array(shared, dtype=float), ys.mean(0), ys.min(0), ys.max(0)
    low, high = max(min(s) for s in series), min(max(s) for s in series)
    if high <= low:
        return None
    grid = np.linspace(low, high, 64)
    ys = np.array([np.interp(grid, sorted(s), [s[x] for x in sorted(s)]) for s in series])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def _plot_curves(ax, study: StudyData, colors, points, complete_only: bool = False) -> None:
    for variant in study.variants:
        runs = [
            r
            for r in study.runs_of(variant)
            if r.records and (r.status == "complete" or not complete_only)
        ]
        line = _mean_series(runs, points)
        if line is None:
            continue
        x, mean, low, high = line
        ax.plot(x, mean, color=colors[variant], label=variant, linewidth=1.6)
        if len(runs) > 1:
            ax.fill_between(x, low, high, color=colors[variant], alpha=0.15, linewidth=0)


def _eval_points(key: str, budget: str) -> Callable[[RunData], list[tuple[float, float]]]:
    def points(run: RunData) -> list[tuple[float, float]]:
        return [(p[budget], p[key]) for p in eval_curve(run) if p[budget] is not None]

    return points


def _train_points(run: RunData) -> list[tuple[float, float]]:
    return [(r["tokens_seen"], r["loss"]) for r in run.train_records]


def _finish(fig, path: Path) -> None:
    """PNG for the report, and the same figure as vector PDF under paper/ for a manuscript."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    (path.parent / "paper").mkdir(exist_ok=True)
    fig.savefig(path.parent / "paper" / path.with_suffix(".pdf").name)
    plt.close(fig)


def _target_line(ax, analysis: Analysis) -> None:
    if analysis.target_loss is not None:
        ax.axhline(
            analysis.target_loss,
            color="0.3",
            linestyle="--",
            linewidth=1,
            label=f"target {analysis.target_loss:.3f}",
        )


def _bars(
    ax,
    names: list[str],
    values: list[float | None],
    errors: list[float | None],
    colors,
    title: str,
    ylabel: str,
    missing: str = "n/a",
) -> None:
    shown = [v if v is not None else 0.0 for v in values]
    yerr = [e or 0.0 for e in errors]
    ax.bar(
        names, shown, color=[colors[n] for n in names], yerr=yerr if any(yerr) else None, capsize=3
    )
    for i, value in enumerate(values):
        if value is None:
            ax.text(
                i,
                0.02,
                missing,
                ha="center",
                va="bottom",
                fontsize=8,
                rotation=90,
                transform=ax.get_xaxis_transform(),
            )
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=30)


def draw_all(study: StudyData, analysis: Analysis, out: Path) -> dict[str, str]:
    """Write every figure into ``out``; returns {file name: description}."""
    out.mkdir(parents=True, exist_ok=True)
    colors = _colors(study.variants)
    variants = [v for v, _ in analysis.ranking] or study.variants
    table = analysis.per_variant

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    _plot_curves(left, study, colors, _train_points)
    left.set(title="Training loss (mean over logged steps)", xlabel="tokens seen", ylabel=LOSS)
    _plot_curves(right, study, colors, _eval_points("val_loss", "tokens"))
    right.set(title="Validation loss (held-out documents)", xlabel="tokens seen", ylabel=LOSS)
    for ax in (left, right):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    _finish(fig, out / "training_loss_comparison.png")

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0, 0]
    x = np.arange(len(variants))
    val = [table[v]["eval_loss"] or 0.0 for v in variants]
    train = [table[v]["train_loss"] or 0.0 for v in variants]
    ax.bar(
        x - 0.2,
        val,
        0.4,
        color=[colors[v] for v in variants],
        label="validation",
        yerr=[table[v]["eval_loss_std"] or 0.0 for v in variants],
        capsize=3,
    )
    ax.bar(
        x + 0.2,
        train,
        0.4,
        color=[colors[v] for v in variants],
        alpha=0.45,
        hatch="//",
        label="training (last 10% of steps)",
    )
    ax.set_xticks(x, variants, rotation=30)
    ax.set(title="Final loss (ranked by validation loss)", ylabel=LOSS)
    ax.legend(fontsize=8)
    for ax, key, title, unit in (
        (axes[0, 1], "val_bpb", "Validation bits per byte", "bits / byte"),
        (axes[1, 0], "accuracy", "Validation next-token accuracy", "fraction of targets"),
        (axes[1, 1], "top5_accuracy", "Validation top-5 accuracy", "fraction of targets"),
    ):
        _bars(
            ax,
            variants,
            [table[v][key] for v in variants],
            [table[v][f"{key}_std"] for v in variants],
            colors,
            title,
            unit,
        )
    _finish(fig, out / "final_performance_comparison.png")

    fig, (curve_ax, target_ax, speed_ax) = plt.subplots(1, 3, figsize=(16, 4.5))
    _plot_curves(curve_ax, study, colors, _eval_points("val_loss", "flops"))
    _target_line(curve_ax, analysis)
    curve_ax.set(title="Validation loss against compute", xlabel="training FLOPs", ylabel=LOSS)
    curve_ax.legend(fontsize=8)
    curve_ax.grid(alpha=0.3)
    ranked = [v for v, _ in analysis.efficiency_ranking]
    flops = [table[v]["flops_to_target"] for v in ranked]
    _bars(
        target_ax,
        ranked,
        flops,
        [None] * len(ranked),
        colors,
        "Compute to reach the target loss (lower is better)",
        "training FLOPs",
        missing="not reached",
    )
    _bars(
        speed_ax,
        variants,
        [table[v]["tokens_per_s"] for v in variants],
        [table[v]["tokens_per_s_std"] for v in variants],
        colors,
        "Training throughput",
        "tokens / second",
    )
    _finish(fig, out / "efficiency_analysis.png")

    fig, (step_ax, rate_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    _plot_curves(step_ax, study, colors, _eval_points("val_loss", "step"))
    _target_line(step_ax, analysis)
    step_ax.set(title="Validation loss by optimizer step", xlabel="step", ylabel=LOSS)

    def rate_points(run: RunData) -> list[tuple[float, float]]:
        evals = run.eval_records
        return [
            (
                after["step"],
                (before["val_loss"] - after["val_loss"])
                / (after["tokens_seen"] - before["tokens_seen"])
                * 1e6,
            )
            for before, after in itertools.pairwise(evals)
        ]

    _plot_curves(rate_ax, study, colors, rate_points)
    rate_ax.axhline(0, color="0.5", linewidth=0.8)
    rate_ax.set(
        title="Rate of improvement between evaluations",
        xlabel="step",
        ylabel="validation loss drop per million tokens (nats)",
    )
    for ax in (step_ax, rate_ax):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    _finish(fig, out / "convergence_analysis.png")

    for name, budget, xlabel in (
        ("val_loss_vs_tokens.png", "tokens", "tokens seen"),
        ("val_loss_vs_time.png", "time_s", "training time (seconds, evaluation excluded)"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        _plot_curves(ax, study, colors, _eval_points("val_loss", budget))
        _target_line(ax, analysis)
        ax.set(title=f"Validation loss against {xlabel.split(' (')[0]}", xlabel=xlabel, ylabel=LOSS)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        _finish(fig, out / name)

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), sharey=True)
    for ax, (budget, label) in zip(axes, BUDGETS.items(), strict=True):
        _plot_curves(ax, study, colors, _eval_points("val_loss", budget), complete_only=True)
        matched = analysis.equal_budgets.get(budget, {}).get("matched_budget")
        if matched is not None:
            ax.axvline(
                matched,
                color="0.3",
                linestyle=":",
                linewidth=1,
                label="budget every variant reached",
            )
        ax.set(title=f"Validation loss against {label.split(' (')[0]}", xlabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(LOSS)
    _finish(fig, out / "equal_budget_comparison.png")
    return {
        **FIGURES,
        **draw_schedules(study, out),
        **draw_scaling(study, analysis, out),
        **draw_sensitivity(study, analysis, out),
    }
