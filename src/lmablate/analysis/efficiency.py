"""Efficiency: the training compute each configuration needs to reach a target loss, read late
in every run, with the seeds' uncertainty. No torch.

The rule (the report states it too):

- **Target levels.** The common target (the highest of the configurations' lowest seed-mean
  validation losses: every configuration reaches it) and ``TARGET_LEVELS - 1`` more, evenly
  spaced from it towards the lowest seed-mean loss of any configuration (that loss itself is
  left out: only its own configuration reaches it, at its end).
- **The ranking target** is the highest level that every configuration reaching it reaches
  *late*, at or after ``LATE_REACH_FRACTION`` of its own training tokens, and that at least two
  configurations reach. At the common target alone, the worst configuration is read at its end
  (last by construction) and better ones in their first evaluations, half-way down a schedule
  that has not annealed yet (Hägele et al. 2024: curves of different schedules compare only
  near their ends) and where evaluations are sparsest on a convex curve. A configuration whose
  lowest loss stays above the ranking target is listed as not reaching it. When no level
  qualifies, the common target ranks and the early readings are marked *read mid-schedule*.
- **Reading a curve.** Compute to a target is read off the configuration's seed-mean
  evaluation curve, interpolated linearly in log compute between the two evaluations around
  the crossing (loss falls roughly as a power of compute, so it is nearer a straight line in
  log compute); between the step-0 evaluation and the next, where log compute is undefined,
  linearly.
- **Uncertainty.** Each seed's own curve gives its compute to the ranking target; a
  configuration's interval is the 95% t-interval of log compute over its seeds, exponentiated.
  The margin between the configuration needing least compute and the runner-up is the
  difference in log compute over seeds (``stats.compare``: paired on the seeds both completed).
  "Most efficient" is a finding only when that interval lies wholly below zero and every placed
  configuration reaches the target late; with one seed the margin is untested.
"""

from __future__ import annotations

import math
from typing import Any

from lmablate.analysis.rundata import StudyData, eval_curve
from lmablate.analysis.stats import compare, summarize

TARGET_LEVELS = 4  # the common target and three levels between it and the lowest loss
LATE_REACH_FRACTION = 0.5  # "late": at or after half of the configuration's own tokens

RULE = (
    f"the ranking target is the highest of {TARGET_LEVELS} target losses (the common target, "
    "the highest of the configurations' lowest seed-mean validation losses, and levels evenly "
    "spaced from it towards the lowest loss any configuration reaches) that every "
    "configuration reaching it reaches in the last "
    f"{1 - LATE_REACH_FRACTION:.0%} of its own training tokens, and that at least two reach; "
    "compute to it is read off each configuration's seed-mean evaluation curve, interpolated "
    "linearly in log compute between evaluations"
)


def compute_to_reach(curve: list[dict[str, Any]], target: float, budget: str) -> float | None:
    """The ``budget`` (tokens, flops or time_s) at which the curve's validation loss first
    reaches ``target``, interpolated linearly in log budget between the evaluations around
    the crossing (linearly from a budget of 0); None if it never does."""
    for before, after in zip([None, *curve], curve, strict=False):
        if after[budget] is None or not after["score"] <= target:  # NaN never reaches it
            continue
        if before is None or before[budget] is None or before["score"] == after["score"]:
            return after[budget]
        fraction = (before["score"] - target) / (before["score"] - after["score"])
        low, high = before[budget], after[budget]
        if low <= 0 or high <= 0:
            return low + fraction * (high - low)
        return math.exp(math.log(low) + fraction * (math.log(high) - math.log(low)))
    return None


def common_target(curves: dict[str, list[dict[str, Any]]]) -> float | None:
    """The highest of the curves' lowest validation losses: every curve reaches it."""
    lows = [min(p["score"] for p in c) for c in curves.values() if c]
    lows = [x for x in lows if math.isfinite(x)]
    return max(lows) if lows else None


def target_levels(curves: dict[str, list[dict[str, Any]]]) -> list[float]:
    """The common target and the levels between it and the lowest loss, highest first."""
    top = common_target(curves)
    if top is None:
        return []
    lowest = min(
        min(p["score"] for p in c)
        for c in curves.values()
        if c and math.isfinite(min(p["score"] for p in c))
    )
    if lowest >= top:
        return [top]
    step = (top - lowest) / TARGET_LEVELS
    return [top - k * step for k in range(TARGET_LEVELS)]


def share_of_run(curve: list[dict[str, Any]], target: float) -> float | None:
    """Where in its own run a curve first reaches ``target``: tokens to it / its last tokens
    (the same share of its training FLOPs, which are tokens times a constant)."""
    tokens = compute_to_reach(curve, target, "tokens")
    total = curve[-1]["tokens"] if curve else None
    return tokens / total if tokens is not None and total else None


def _level(curves: dict[str, list[dict[str, Any]]], target: float) -> dict[str, Any]:
    shares = {v: share_of_run(c, target) for v, c in curves.items()}
    reached = {v: s for v, s in shares.items() if s is not None}
    return {
        "val_loss": target,
        "flops": {v: compute_to_reach(c, target, "flops") for v, c in curves.items()},
        "share_of_run": shares,
        "placed": len(reached),
        "all_late": bool(reached) and all(s >= LATE_REACH_FRACTION for s in reached.values()),
    }


def _seed_compute(study: StudyData, variant: str, target: float) -> dict[int, float | None]:
    return {
        run.seed: compute_to_reach(eval_curve(run), target, "flops")
        for run in study.runs_of(variant, complete_only=True)
    }


def _interval(per_seed: dict[int, float | None]) -> dict[str, Any]:
    """The seeds' 95% interval of compute to the target (t over log compute, exponentiated)."""
    missing = [seed for seed, value in per_seed.items() if not value]
    if missing:
        return {"ci_low": None, "ci_high": None, "note": f"seed(s) {missing} do not reach it"}
    summary = summarize([math.log(v) for v in per_seed.values()])
    if summary is None or summary.ci_low is None:
        return {"ci_low": None, "ci_high": None, "note": "one seed: no interval"}
    return {"ci_low": math.exp(summary.ci_low), "ci_high": math.exp(summary.ci_high), "note": ""}


def _margin(best: str, runner: str, seeds: dict[str, dict[int, float | None]]) -> dict[str, Any]:
    """The runner-up's compute over the best's, with the seeds' 95% interval of that ratio."""
    mine, theirs = seeds[best], seeds[runner]
    out: dict[str, Any] = {"best": best, "runner_up": runner}
    if not all(mine.values()) or not all(theirs.values()):
        return {**out, "verdict": "untested", "note": "a seed of one of them does not reach it"}
    comparison = compare(
        best,
        {s: math.log(v) for s, v in mine.items()},
        {s: math.log(v) for s, v in theirs.items()},
    )
    out |= {"test": comparison.test, "n": comparison.n_variant}
    if comparison.ci_low is None:
        return {**out, "verdict": "untested", "note": comparison.note}
    # the best's log compute minus the runner-up's: below zero the best needs less
    beyond = comparison.ci_high < 0
    return {
        **out,
        "ratio_ci_low": math.exp(-comparison.ci_high),
        "ratio_ci_high": math.exp(-comparison.ci_low),
        "verdict": "beyond uncertainty" if beyond else "within uncertainty",
        "note": f"{comparison.test} over {comparison.n_variant} seeds on log compute",
    }


def efficiency(study: StudyData, curves: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Target levels, the ranking target, and at it: each configuration's compute with the
    seeds' interval, and the margin between the first two. ``curves``: the seed-mean
    evaluation curves of the configurations every seed of which completed."""
    curves = {v: c for v, c in curves.items() if c}
    levels = [_level(curves, target) for target in target_levels(curves)]
    if not levels:
        return {}
    chosen = next((i for i, lv in enumerate(levels) if lv["all_late"] and lv["placed"] >= 2), None)
    late = chosen is not None
    level = levels[chosen if late else 0]
    target = level["val_loss"]
    # a curve already at the target in its step-0 evaluation never trained below it: no compute
    at_start = [v for v in curves if level["flops"][v] == 0]
    seeds = {v: _seed_compute(study, v, target) for v in curves if level["flops"][v]}
    configurations = {
        v: {
            "flops": level["flops"][v],
            "share_of_run": level["share_of_run"][v],
            "late": level["share_of_run"][v] >= LATE_REACH_FRACTION,
            "seed_flops": seeds[v],
            **_interval(seeds[v]),
        }
        for v in seeds
    }
    order = sorted(configurations, key=lambda v: configurations[v]["flops"])
    margin = None
    if len(order) >= 2:
        best, runner = order[0], order[1]
        margin = _margin(best, runner, seeds)
        margin["ratio"] = configurations[runner]["flops"] / configurations[best]["flops"]
    return {
        "rule": RULE,
        "late_reach_fraction": LATE_REACH_FRACTION,
        "levels": levels,
        "target": target,
        "target_index": chosen if late else 0,
        "late": late,
        "early": [v for v in order if not configurations[v]["late"]],
        "configurations": configurations,
        "not_reaching": [v for v in curves if v not in configurations and v not in at_start],
        "at_start": at_start,
        "margin": margin,
        "finding": bool(late and margin and margin["verdict"] == "beyond uncertainty"),
    }
