"""Will it hold at scale: every configuration at every size of the study's ``scale:`` axis,
and how far the verdicts of the smaller sizes predict the largest one's. No torch.

Per size (ordered by the baseline's training FLOPs there): each configuration's final score
(validation loss, or bpb when tokenizers differ) over seeds, its paired difference from the
baseline at the same size with a t-interval, and a verdict, Holm-adjusted over the
configurations at that size with the baseline's seed spread there as the noise floor.

- **Trend.** Per configuration, the least-squares slope of its per-seed differences against
  log10 of the baseline's compute at each size, with a 95% t-interval (n − 2 degrees of
  freedom over the (size, seed) points): below zero the change gains with scale.
- **Rank agreement.** Kendall's τ-b between the configurations' mean scores at each smaller
  size and at the largest, with a 95% percentile interval from a bootstrap over seeds (each
  configuration's seeds resampled with replacement at each size, ``RESAMPLES`` times).
- **Decision agreement** (Magnusson et al. 2025, DataDecide): the share of configuration
  pairs that a smaller size orders as the largest does; a pair tied at either size (equal
  means) counts as agreeing only if tied at both.
- **Flips.** A configuration whose verdict at a smaller size differs from its verdict at the
  largest; a *reversal* when one says better and the other worse.

In a tuned study (``tune:``) every configuration at every size is tuned on its own: it is
represented there by its candidate with the lowest mean validation score, and read on the test
documents, as the tuned comparison does; the chosen learning rate per size shows whether the
best value moves with the size (under sp it does; μP is meant to hold it).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from lmablate.analysis.rundata import StudyData
from lmablate.analysis.stats import compare, noise_floor, summarize, with_verdicts

RESAMPLES = 1000


def kendall_tau(x: list[float], y: list[float]) -> float | None:
    """Kendall's τ-b of two score lists over the same configurations (None under 2, or when
    either is constant)."""
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(scipy_stats.kendalltau(x, y).statistic)


def decision_agreement(small: dict[str, float], large: dict[str, float]) -> float | None:
    """The share of configuration pairs that ``small`` orders as ``large`` does (lower is
    better); a pair tied at either counts as agreeing only if tied at both."""
    names = [n for n in small if n in large]
    pairs = list(itertools.combinations(names, 2))
    if not pairs:
        return None
    agree = sum(np.sign(small[a] - small[b]) == np.sign(large[a] - large[b]) for a, b in pairs)
    return float(agree) / len(pairs)


def trend(points: list[tuple[float, float]]) -> dict[str, Any] | None:
    """Least-squares slope of differences against log10 compute, with a 95% t-interval."""
    xs = [x for x, _ in points]
    if len(points) < 2 or max(xs) == min(xs):
        return None
    fit = scipy_stats.linregress(xs, [y for _, y in points])
    out = {"slope": float(fit.slope), "ci_low": None, "ci_high": None, "n": len(points)}
    if len(points) >= 3:
        half = float(scipy_stats.t.ppf(0.975, len(points) - 2)) * float(fit.stderr)
        out |= {"ci_low": out["slope"] - half, "ci_high": out["slope"] + half}
    return out


def _summary(values: dict[int, float]) -> dict[str, Any] | None:
    summary = summarize(list(values.values()))
    return summary.as_dict() if summary else None


def _mean(values: dict[int, float]) -> float | None:
    return sum(values.values()) / len(values) if values else None


def _rank_interval(
    finals: dict[str, dict[str, dict[int, float]]], small: str, large: str, configs: list[str]
) -> tuple[float | None, float | None]:
    """A 95% percentile interval of τ from resampling each configuration's seeds."""
    if min(len(finals[s][c]) for s in (small, large) for c in configs) < 2:
        return None, None  # one seed: nothing to resample
    rng = np.random.default_rng(0)
    taus = []
    for _ in range(RESAMPLES):
        means = {
            s: [float(np.mean(rng.choice(list(finals[s][c].values()), len(finals[s][c]))))
                for c in configs]
            for s in (small, large)
        }  # fmt: skip
        tau = kendall_tau(means[small], means[large])
        if tau is not None:
            taus.append(tau)
    if not taus:
        return None, None
    return float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))


def _representative(
    study: StudyData, name: str, tuned: dict[str, list[str]]
) -> tuple[str | None, bool]:
    """The run that stands for configuration ``name`` at a size, and whether its test score is
    read: in a tuned study its candidate with the lowest mean validation score over complete
    seeds (as the tuned comparison chooses; read on test), else ``name`` itself."""
    candidates = tuned.get(name)
    if not candidates:
        return name, False
    means = {}
    for candidate in dict.fromkeys(candidates):
        runs = study.runs_of(candidate)
        scores = [r.final_score for r in runs if r.status == "complete"]
        if runs and len(scores) == len(runs) and None not in scores:
            means[candidate] = sum(scores) / len(scores)
    return (min(means, key=means.__getitem__) if means else None), True


def _learning_rate(study: StudyData, name: str | None) -> float | None:
    runs = study.runs_of(name) if name else []
    config = next((r.config for r in runs if r.config), None)
    return (config or {}).get("train", {}).get("learning_rate")


def scale_analysis(study: StudyData) -> dict[str, Any]:
    """The Scale section's numbers; {} for a study without ``scale:``."""
    scale = study.study.get("scale") or {}
    if not scale:
        return {}
    table: dict[str, dict[str, str]] = scale["variants"]
    configs = [c for c in table if c in study.compared]
    sizes = [s for s in scale["sizes"] if all(s in table[c] for c in configs)]
    finals: dict[str, dict[str, dict[int, float]]] = {}
    compute: dict[str, dict[str, float | None]] = {}
    params: dict[str, dict[str, float | None]] = {}
    chosen: dict[str, dict[str, str | None]] = {}
    tuned = (study.study.get("tuning") or {}).get("variants") or {}
    for size in sizes:
        finals[size], compute[size], params[size], chosen[size] = {}, {}, {}, {}
        for config in configs:
            run_name, test = _representative(study, table[config][size], tuned)
            chosen[size][config] = run_name
            runs = study.runs_of(run_name, complete_only=True) if run_name else []
            score = (lambda r: r.final_test_score) if test else (lambda r: r.final_score)
            finals[size][config] = {r.seed: score(r) for r in runs if score(r) is not None}
            flops = [r.summary["total_flops"] for r in runs if r.summary.get("total_flops")]
            counts = [(r.summary.get("params") or {}).get("total") for r in runs]
            compute[size][config] = sum(flops) / len(flops) if flops else None
            params[size][config] = counts[0] if counts and counts[0] else None
    sizes = [s for s in sizes if finals[s].get("baseline") and compute[s].get("baseline")]
    sizes.sort(key=lambda s: compute[s]["baseline"])
    if len(sizes) < 2:
        return {"sizes": sizes, "note": "fewer than two sizes with a complete baseline"}
    largest = sizes[-1]
    per_size: dict[str, Any] = {}
    for size in sizes:
        base = finals[size]["baseline"]
        floor = noise_floor(list(base.values()))
        comparisons = with_verdicts(
            [
                compare(c, finals[size][c], base)
                for c in configs
                if c != "baseline" and finals[size][c] and base
            ],
            floor,
        )
        per_size[size] = {
            "baseline_flops": compute[size]["baseline"],
            "baseline_params": params[size]["baseline"],
            "noise_floor": floor,
            "configurations": {
                c: {
                    "run": chosen[size][c],
                    "score": _summary(finals[size][c]),
                    "flops": compute[size][c],
                    "params": params[size][c],
                }
                for c in configs
            },
            "comparisons": {x.variant: x.as_dict() for x in comparisons},
        }
    trends = {}
    for config in configs:
        if config == "baseline":
            continue
        points = [
            (math.log10(compute[size]["baseline"]), finals[size][config][seed] - base_value)
            for size in sizes
            for seed, base_value in finals[size]["baseline"].items()
            if seed in finals[size][config]
        ]
        trends[config] = trend(points)
    placed = [c for c in configs if all(finals[s][c] for s in sizes)]
    means = {s: {c: _mean(finals[s][c]) for c in placed} for s in sizes}
    agreement = {}
    for size in sizes[:-1]:
        low, high = _rank_interval(finals, size, largest, placed)
        agreement[size] = {
            "kendall_tau": kendall_tau(
                [means[size][c] for c in placed], [means[largest][c] for c in placed]
            ),
            "tau_ci_low": low,
            "tau_ci_high": high,
            "decision_agreement": decision_agreement(means[size], means[largest]),
            "pairs": len(placed) * (len(placed) - 1) // 2,
        }
    flips = []
    final_verdicts = {c: v["verdict"] for c, v in per_size[largest]["comparisons"].items()}
    for size in sizes[:-1]:
        for config, row in per_size[size]["comparisons"].items():
            there = final_verdicts.get(config)
            untested = "untested" in (row["verdict"], there)  # no verdict to change
            if there is not None and row["verdict"] != there and not untested:
                flips.append(
                    {
                        "configuration": config,
                        "size": size,
                        "verdict": row["verdict"],
                        "largest": largest,
                        "verdict_at_largest": there,
                        "reversal": {row["verdict"], there} == {"better", "worse"},
                    }
                )
    learning_rates = {
        c: {size: _learning_rate(study, chosen[size][c]) for size in sizes} for c in configs
    }
    return {
        "sizes": sizes,
        "largest": largest,
        "tuned": bool(tuned),
        "learning_rates": learning_rates if tuned else {},
        "configurations": configs,
        "tokens": scale.get("tokens"),
        "per_size": per_size,
        "trends": trends,
        "agreement": agreement,
        "flips": flips,
        "method": "differences paired by seed at each size with Holm verdicts; trend: "
        "least-squares slope of the per-seed differences against log10 baseline FLOPs; "
        "Kendall τ-b of mean scores against the largest size with a 95% bootstrap interval "
        f"over seeds ({RESAMPLES} resamples); decision agreement: share of pairs ordered as "
        "at the largest size",
    }
