"""A study's curves on shared axes: each configuration's seed mean with the seeds' range
shaded, evaluation points by tokens, FLOPs or seconds, and the reference lines drawn over
them (the matched budget, the ranking target, the count models' losses). No torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import numpy as np

from lmablate.analysis.findings import Analysis
from lmablate.analysis.rundata import RunData, StudyData, eval_curve


def mean_series(
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


def plot_curves(ax, study: StudyData, styles, points, markers: bool = True) -> None:
    """Each compared configuration's curve (seed mean; seeds' range shaded when several)."""
    for variant in study.compared:
        runs = [r for r in study.runs_of(variant) if r.records]
        line = mean_series(runs, points)
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


def eval_points(budget: str, key: str = "score") -> Callable[[RunData], list[tuple[float, float]]]:
    def points(run: RunData) -> list[tuple[float, float]]:
        return [(p[budget], p[key]) for p in eval_curve(run) if p[budget] is not None]

    return points


def train_points(run: RunData) -> list[tuple[float, float]]:
    return [(r["tokens_seen"], r["loss"]) for r in run.train_records]


def rate_points(run: RunData) -> list[tuple[float, float]]:
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


def matched_line(ax, analysis: Analysis, budget: str) -> None:
    matched = analysis.equal_budgets.get(budget, {}).get("matched_budget")
    if matched is not None:
        ax.axvline(
            matched,
            color="0.45",
            linestyle=":",
            linewidth=0.9,
            label="budget every run reached",
        )


def target_line(ax, analysis: Analysis) -> None:
    if analysis.target_loss is not None:
        ax.axhline(
            analysis.target_loss,
            color="0.45",
            linestyle="--",
            linewidth=0.9,
            label="ranking target loss",
        )


def reference_lines(ax, analysis: Analysis, key: str = "loss", models=("bigram",)) -> None:
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
