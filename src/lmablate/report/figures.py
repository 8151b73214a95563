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

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker
from matplotlib.lines import Line2D

from lmablate.analysis.findings import Analysis
from lmablate.analysis.rundata import StudyData
from lmablate.analysis.validity import INDICATIVE, OVERFIT_GAP
from lmablate.report.curves import (
    eval_points,
    matched_line,
    plot_curves,
    rate_points,
    reference_lines,
    target_line,
    train_points,
)
from lmablate.report.design_figures import draw_scaling, draw_schedules, draw_sensitivity
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
    si,
    value_label,
    variant_styles,
)
from lmablate.report.scale import draw_scale

# ------------------------------------------------------------------------- the main figures


def _loss_curves(study: StudyData, analysis: Analysis, styles, out: Path):
    fig, (train_ax, val_ax) = figure(TEXT, 2, len(study.compared) + 3)
    plot_curves(train_ax, study, styles, train_points, markers=False)
    train_ax.set(title="(a) Training loss (logged means)", xlabel="tokens seen", ylabel=TRAIN_LOSS)
    by_bytes = in_bytes(analysis)
    plot_curves(val_ax, study, styles, eval_points("tokens"))
    matched_line(val_ax, analysis, "tokens")
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
        reference_lines(val_ax, analysis, models=("unigram", "bigram"))
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
        reference_lines(loss_ax, analysis)
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
    plot_curves(curve_ax, study, styles, eval_points("flops"))
    target_line(curve_ax, analysis)
    matched_line(curve_ax, analysis, "flops")
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
    plot_curves(rate_ax, study, styles, rate_points)
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
    plot_curves(ax, study, styles, eval_points("time_s"))
    matched_line(ax, analysis, "time_s")
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
