"""Figures of a study, drawn at paper size from the analysis tables. No torch.

Every figure is drawn for a two-column paper: one column (3.3 in) or the text width (6.8 in)
wide, its text at least 7 pt at that size, and saved twice at exactly that size: PNG for the
report, vector PDF (TrueType fonts) under ``paper/``. Each quantity is plotted once across the
package: validation loss against tokens, FLOPs and time each have one panel. Colours are the
Okabe-Ito palette (distinguishable with every common colour-vision deficiency) with a marker
per configuration at its evaluation points, so a curve reads in grey too. Loss axes start near
the data, never at 0; error bars appear only where several seeds give a spread (the seeds' 95%
interval), and curves of several seeds are their mean with the seeds' range shaded.

``draw_all`` returns, per figure, its description, its size and what each panel plots (read
back from the drawn axes), which research_data.json records under ``visualizations``.
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
from matplotlib.lines import Line2D
from pydantic import ValidationError

from lmablate.analysis.findings import Analysis
from lmablate.analysis.rundata import RunData, StudyData, eval_curve
from lmablate.analysis.validity import INDICATIVE, OVERFIT_GAP
from lmablate.config.run import TrainConfig
from lmablate.optim.schedules import lr_at
from lmablate.report.format import plain, represented
from lmablate.report.plotting import (
    COLUMN,
    PALETTE,
    RATE,
    RATE_BPB,
    STYLE,
    TEXT,
    TRAIN_LOSS,
    VAL_BPB,
    VAL_LOSS,
    bars,
    dots,
    figure,
    finish,
    in_bytes,
    legend_below,
    plain_log,
    si,
    value_label,
    variant_styles,
)
from lmablate.report.scale import draw_scale

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
    fig, (ax,) = figure(TEXT, 1, 0)
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
            label=", ".join(same) + f" ({_schedule_label(cfg)})",
        )
    peaks = [c.learning_rate for c in configs.values()]
    if max(peaks) / min(peaks) > 5:
        ax.set_yscale("log")
        plain_log(ax.yaxis)
    ax.set(title="Learning-rate schedules", xlabel="optimizer step", ylabel="learning rate")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return finish(
        fig,
        out / SCHEDULE_FIGURE,
        "Learning rate at every optimizer step for each distinct schedule (the function the "
        "runs trained with; each parameter group scales it by its multiplier)",
    )


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
    grid = np.linspace(low, high, 32)
    ys = np.array([np.interp(grid, sorted(s), [s[x] for x in sorted(s)]) for s in series])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def _plot_curves(ax, study: StudyData, styles, points, markers: bool = True) -> None:
    """Each compared configuration's curve (seed mean; seeds' range shaded when several)."""
    for variant in study.compared:
        runs = [r for r in study.runs_of(variant) if r.records]
        line = _mean_series(runs, points)
        if line is None:
            continue
        x, mean, low, high = line
        style = styles[variant]
        ax.plot(
            x,
            mean,
            color=style["color"],
            linestyle=style["linestyle"],
            marker=style["marker"] if markers else None,
            markersize=3,
            label=variant,
        )
        if len(runs) > 1 and np.any(high > low):
            ax.fill_between(x, low, high, color=style["color"], alpha=0.15, linewidth=0)


def _eval_points(budget: str, key: str = "score") -> Callable[[RunData], list[tuple[float, float]]]:
    def points(run: RunData) -> list[tuple[float, float]]:
        return [(p[budget], p[key]) for p in eval_curve(run) if p[budget] is not None]

    return points


def _train_points(run: RunData) -> list[tuple[float, float]]:
    return [(r["tokens_seen"], r["loss"]) for r in run.train_records]


def _rate_points(run: RunData) -> list[tuple[float, float]]:
    """Change of the study's measure (validation loss, or bpb) per million tokens between
    consecutive evaluations."""
    return [
        (
            after["tokens_seen"],
            (run.score(after) - run.score(before))
            / (after["tokens_seen"] - before["tokens_seen"])
            * 1e6,
        )
        for before, after in itertools.pairwise(run.eval_records)
        if after["tokens_seen"] > before["tokens_seen"]
    ]


def _matched_line(ax, analysis: Analysis, budget: str) -> None:
    matched = analysis.equal_budgets.get(budget, {}).get("matched_budget")
    if matched is not None:
        ax.axvline(
            matched,
            color="0.45",
            linestyle=":",
            linewidth=0.9,
            label="budget every run reached",
        )


def _target_line(ax, analysis: Analysis) -> None:
    if analysis.target_loss is not None:
        ax.axhline(
            analysis.target_loss,
            color="0.45",
            linestyle="--",
            linewidth=0.9,
            label="ranking target loss",
        )


def _reference_lines(ax, analysis: Analysis, key: str = "loss", models=("bigram",)) -> None:
    """The count models' losses on the same validation targets (analysis.references)."""
    refs = analysis.references.get("val") or {}
    for name, style in (("unigram", "-."), ("bigram", (0, (1, 2)))):
        if name in models and name in refs:
            ax.axhline(
                refs[name][key],
                color="0.25",
                linestyle=style,
                linewidth=0.9,
                label=f"{name} reference (training-split counts)",
            )


# ------------------------------------------------------------------------- the main figures


def _loss_curves(study: StudyData, analysis: Analysis, styles, out: Path):
    fig, (train_ax, val_ax) = figure(TEXT, 2, len(study.compared) + 3)
    _plot_curves(train_ax, study, styles, _train_points, markers=False)
    train_ax.set(title="(a) Training loss (logged means)", xlabel="tokens seen", ylabel=TRAIN_LOSS)
    by_bytes = in_bytes(analysis)
    _plot_curves(val_ax, study, styles, _eval_points("tokens"))
    _matched_line(val_ax, analysis, "tokens")
    if by_bytes:
        train_ax.set_title(
            "(a) Training loss (each its own tokenizer's tokens)"
        )  # nats per token of different tokenizers do not compare: the same bytes do
        val_ax.set(
            title="(b) Validation bits per byte, held-out documents",
            xlabel="tokens seen",
            ylabel=VAL_BPB,
        )
    else:
        _reference_lines(val_ax, analysis, models=("unigram", "bigram"))
        val_ax.set(
            title="(b) Validation loss, held-out documents", xlabel="tokens seen", ylabel=VAL_LOSS
        )
    for ax in (train_ax, val_ax):
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(si))
    legend_below(fig, [train_ax, val_ax])
    description = (
        "Training loss (nats per token of each configuration's own tokenizer, not comparable "
        "across tokenizers) and validation bits per byte of the same held-out bytes against "
        "tokens seen (markers: evaluations; the dotted line: the token budget every "
        "configuration reached)"
        if by_bytes
        else "Training loss and validation loss against tokens seen (markers: evaluations; the "
        "dotted line: the token budget every configuration reached; horizontal lines: the "
        "unigram and bigram reference losses on the same validation targets)"
    )
    return finish(fig, out / "training_loss_comparison.png", description)


def _final_performance(analysis: Analysis, variants: list[str], styles, out: Path):
    table, intervals = analysis.per_variant, analysis.intervals
    fig, axes = figure(TEXT, 4, 0, rows=2)
    loss_ax, second_ax, acc_ax, top5_ax = axes
    by_bytes = in_bytes(analysis)
    if by_bytes:
        # the tokenizers differ: the ranking panel is bits per byte of the same bytes, and
        # each configuration's nats per token (of its own tokens) come second
        dots(
            loss_ax,
            variants,
            [table[v]["val_bpb"] for v in variants],
            [intervals[v].get("val_bpb") for v in variants],
            styles,
        )
        loss_ax.set(
            title="(a) Final validation bits per byte, ranked",
            ylabel="final validation bits per byte",
        )
        _loss_dots(second_ax, table, intervals, variants, styles)
        second_ax.set(
            title="(b) Final loss per token, each its own tokenizer",
            ylabel="final loss (nats/own token)",
        )
        second = "each configuration's loss in nats per token of its own tokenizer (not "
        second += "comparable across tokenizers; accuracies are per own token too)"
    else:
        _loss_dots(loss_ax, table, intervals, variants, styles)
        loss_ax.set(
            title="(a) Final loss, ranked by validation loss", ylabel="final loss (nats/token)"
        )
        _reference_lines(loss_ax, analysis)
        second = _second_panel(second_ax, table, intervals, variants, styles)
    _loss_legend(loss_ax if not by_bytes else second_ax)
    own = " (own tokens)" if by_bytes else ""
    for ax, key, title, unit in (
        (acc_ax, "accuracy", f"(c) Next-token accuracy{own}", "fraction of targets"),
        (top5_ax, "top5_accuracy", f"(d) Top-5 accuracy{own}", "fraction of targets (top-5)"),
    ):
        dots(
            ax,
            variants,
            [table[v][key] for v in variants],
            [intervals[v].get(key) for v in variants],
            styles,
        )
        ax.set(title=title, ylabel=unit)
    first = (
        "Final validation bits per byte"
        if by_bytes
        else "Final validation loss (with training loss)"
    )
    return finish(
        fig,
        out / "final_performance_comparison.png",
        f"{first}, {second}, accuracy and top-5 accuracy per configuration; error bars are "
        "the seeds' 95% intervals where there are several seeds",
    )


def _loss_dots(ax, table, intervals, variants: list[str], styles) -> None:
    """Final validation loss (filled, with the seeds' interval) and training loss (hollow)."""
    dots(
        ax,
        variants,
        [table[v]["eval_loss"] for v in variants],
        [intervals[v]["eval_loss"] for v in variants],
        styles,
        offset=-0.12,
    )
    dots(
        ax,
        variants,
        [table[v]["train_loss"] for v in variants],
        [None] * len(variants),
        styles,
        hollow=True,
        offset=0.12,
    )


def _loss_legend(ax) -> None:
    ax.legend(
        handles=[
            Line2D([], [], color="0.3", marker="o", linestyle="none", label="validation"),
            Line2D(
                [], [], color="0.3", marker="o", markerfacecolor="white", linestyle="none",
                label="training (last 10% of steps)",
            ),
            *[line for line in ax.get_lines() if line.get_label().endswith("counts)")],
        ],
        loc="best",
        frameon=False,
    )  # fmt: skip


def _second_panel(ax, table, intervals, variants: list[str], styles) -> str:
    """One tokenizer: bits per byte, or the generalization gap where bpb is the loss rescaled.
    Returns what the panel shows, for the description."""
    if _bpb_is_rescaled_loss(table, variants):
        # one tokenizer and the same scored bytes: bpb is loss times a constant, so the panel
        # shows what panel (a) cannot, the generalization gap against the overfitting threshold
        gaps = [
            None if None in (table[v]["eval_loss"], table[v]["train_loss"])
            else table[v]["eval_loss"] - table[v]["train_loss"]
            for v in variants
        ]  # fmt: skip
        dots(ax, variants, gaps, [None] * len(variants), styles)
        ax.axhline(
            OVERFIT_GAP, color="0.5", linestyle="--", linewidth=0.8,
            label=f"overfitting threshold ({OVERFIT_GAP:g} nats)",
        )  # fmt: skip
        ax.legend(loc="best", frameon=False)
        ax.set(title="(b) Generalization gap (validation - training)", ylabel="nats/token")
        return "the generalization gap (bits per byte are the loss rescaled here: one tokenizer)"
    dots(
        ax,
        variants,
        [table[v]["val_bpb"] for v in variants],
        [intervals[v].get("val_bpb") for v in variants],
        styles,
    )
    ax.set(title="(b) Validation bits per byte", ylabel="bits/byte")
    return "bits per byte"


def _bpb_is_rescaled_loss(table: dict[str, dict[str, Any]], variants: list[str]) -> bool:
    """True when every configuration's bits per byte is its loss times one constant (the same
    tokenizer scoring the same bytes), so a bpb panel would repeat the loss panel."""
    ratios = [
        table[v]["val_bpb"] / table[v]["eval_loss"]
        for v in variants
        if table[v].get("val_bpb") and table[v].get("eval_loss")
    ]
    return len(ratios) == len(variants) and max(ratios) - min(ratios) <= 1e-6 * max(ratios)


def _efficiency(study: StudyData, analysis: Analysis, variants: list[str], styles, out: Path):
    table = analysis.per_variant
    fig, (curve_ax, target_ax, speed_ax) = figure(TEXT, 3, len(study.compared) + 2)
    _plot_curves(curve_ax, study, styles, _eval_points("flops"))
    _target_line(curve_ax, analysis)
    _matched_line(curve_ax, analysis, "flops")
    measure = "bits per byte" if in_bytes(analysis) else "loss"
    curve_ax.set(
        title=f"(a) Validation {measure} by compute",
        xlabel="training FLOPs",
        ylabel=value_label(analysis),
    )
    curve_ax.xaxis.set_major_formatter(ticker.FuncFormatter(si))
    ranked = [v for v in variants if v in dict(analysis.efficiency_ranking)]
    ranked.sort(key=lambda v: table[v]["flops_to_target"] or float("inf"))
    missed = [v for v in variants if v not in ranked]
    names = ranked + missed
    placed = analysis.efficiency.get("configurations") or {}
    bars(
        target_ax,
        names,
        [table[v]["flops_to_target"] for v in names],
        [None] * len(names),
        styles,
        [
            (placed[v]["ci_low"], placed[v]["ci_high"])
            if v in placed and placed[v]["ci_low"] is not None
            else None
            for v in names
        ],
    )
    target_ax.set(title="(b) Compute to the ranking target", ylabel="training FLOPs to target")
    bars(
        speed_ax,
        variants,
        [table[v]["tokens_per_s"] for v in variants],
        [table[v]["tokens_per_s_std"] for v in variants],
        styles,
    )
    own = " of its own tokenizer" if in_bytes(analysis) else ""
    speed_ax.set(title="(c) Training throughput", ylabel=f"tokens{own}/s (device synchronized)")
    legend_below(fig, [curve_ax])
    return finish(
        fig,
        out / "efficiency_analysis.png",
        f"Validation {measure} against training compute (dashed: the ranking target, which every "
        "configuration placed on it reaches late in its run; dotted: the compute every "
        "configuration reached), the compute each configuration needed to reach the ranking "
        "target (error bars: the seeds' 95% interval, log compute), and training throughput",
    )


def _convergence(study: StudyData, analysis: Analysis, variants: list[str], styles, out: Path):
    table = analysis.per_variant
    fig, (rate_ax, slope_ax) = figure(TEXT, 2, len(study.compared))
    by_bytes = in_bytes(analysis)
    measure = "bits per byte" if by_bytes else "loss"
    _plot_curves(rate_ax, study, styles, _rate_points)
    rate_ax.axhline(0, color="0.5", linewidth=0.6)
    rate_ax.set(
        title=f"(a) Validation {measure} change between evaluations",
        xlabel="tokens seen",
        ylabel=RATE_BPB if by_bytes else RATE,
    )
    rate_ax.xaxis.set_major_formatter(ticker.FuncFormatter(si))
    slopes = [table[v]["late_slope"] for v in variants]
    dots(
        slope_ax,
        variants,
        [s["slope"] if s else None for s in slopes],
        [s if s and s["ci_low"] is not None else None for s in slopes],
        styles,
    )
    slope_ax.axhline(0, color="0.5", linewidth=0.6)
    slope_ax.set(
        title="(b) Late slope of training loss, last fifth",
        ylabel=f"slope (nats/{'own ' if by_bytes else ''}token per M tokens)",
    )
    legend_below(fig, [rate_ax])
    return finish(
        fig,
        out / "convergence_analysis.png",
        f"How fast validation {'bits per byte were' if by_bytes else 'loss was'} still changing "
        "between evaluations, and the late slope of the training loss"
        f"{' (nats per token of each own tokenizer)' if by_bytes else ''} over the last fifth "
        "of training with its 95% interval (below zero: still falling)",
    )


def _time_curves(study: StudyData, analysis: Analysis, styles, out: Path):
    fig, (ax,) = figure(COLUMN, 1, len(study.compared) + 1)
    _plot_curves(ax, study, styles, _eval_points("time_s"))
    _matched_line(ax, analysis, "time_s")
    ax.set(
        title=f"Validation {'bits per byte' if in_bytes(analysis) else 'loss'} by training time",
        xlabel="training seconds",
        ylabel=value_label(analysis),
    )
    legend_below(fig, [ax])
    return finish(
        fig,
        out / "val_loss_vs_time.png",
        f"Validation {'bits per byte' if in_bytes(analysis) else 'loss'} against training time "
        "(evaluation excluded; device synchronized)",
    )


def _equal_budgets(analysis: Analysis, styles, out: Path):
    budgets = analysis.equal_budgets
    names = [v for v, _ in analysis.ranking]
    if not budgets or not names:
        return {}
    fig, (ax,) = figure(TEXT, 1, 0)
    fig.set_size_inches(TEXT, 2.6)
    kinds = [b for b in ("tokens", "flops", "time_s") if b in budgets]
    titles = {"tokens": "equal tokens", "flops": "equal FLOPs", "time_s": "equal time"}
    fills = {"tokens": "o", "flops": "s", "time_s": "^"}
    units = {"tokens": "tokens", "flops": "FLOPs", "time_s": "s"}
    for k, budget in enumerate(kinds):
        losses = budgets[budget]["val_loss"]
        ax.plot(
            [i + (k - 1) * 0.15 for i in range(len(names))],
            [losses.get(v) if losses.get(v) is not None else np.nan for v in names],
            linestyle="none",
            marker=fills[budget],
            color=PALETTE[k + 1],
            label=f"{titles[budget]} ({si(budgets[budget]['matched_budget'])} "
            f"{units[budget]}; {budgets[budget].get('reading', INDICATIVE)})",
        )
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set(
        title=f"Validation {'bits per byte' if in_bytes(analysis) else 'loss'} at the budget "
        "every configuration reached",
        ylabel=value_label(analysis),
    )
    ax.legend(loc="best", frameon=False)
    ends = [
        units[b].removesuffix("s") if b != "time_s" else "time"
        for b in kinds
        if budgets[b].get("reading", INDICATIVE) != INDICATIVE
    ]
    others = len(ends) < len(kinds)
    return finish(
        fig,
        out / "equal_budget_comparison.png",
        f"Each configuration's validation {'bits per byte' if in_bytes(analysis) else 'loss'} "
        "at the largest token, FLOP and time budget every "
        "configuration reached; "
        + (
            f"the {' and '.join(ends)} budget{'s are' if len(ends) > 1 else ' is'} read at the "
            "end of every schedule (matched budgets)"
            + (", the others mid-schedule for the longer runs (indicative)" if others else "")
            if ends
            else "read mid-schedule for the longer runs, so indicative"
        ),
    )


def draw_all(study: StudyData, analysis: Analysis, out: Path) -> dict[str, dict[str, Any]]:
    """Write every figure into ``out``; returns {file name: description, size, panels}."""
    out.mkdir(parents=True, exist_ok=True)
    styles = variant_styles(study.variants)
    variants = [v for v, _ in analysis.ranking] or study.compared
    figures: dict[str, dict[str, Any]] = {}
    with plt.rc_context(STYLE):
        figures |= _loss_curves(study, analysis, styles, out)
        figures |= _final_performance(analysis, variants, styles, out)
        figures |= _efficiency(study, analysis, variants, styles, out)
        figures |= _convergence(study, analysis, variants, styles, out)
        figures |= _time_curves(study, analysis, styles, out)
        figures |= _equal_budgets(analysis, styles, out)
        figures |= draw_schedules(study, styles, out)
        figures |= draw_scaling(study, analysis, styles, out)
        figures |= draw_sensitivity(analysis, styles, out)
        figures |= draw_scale(analysis, styles, out)
    return figures
