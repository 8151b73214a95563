"""Compute multipliers from a budget ladder. No torch.

A study with ``budget: {ladder: [0.25, 0.5, 1, 2]}`` trains the baseline at several budgets,
each with its own full schedule. Its final validation losses against training compute C (FLOPs)
are fitted with the saturating power law

    L(C) = E + A * (C / C0)^(-alpha)          (C0: the baseline's own compute)

by least squares over every complete run of every rung (``scipy.optimize.curve_fit``; the
parameters' standard errors from its covariance). A variant's **compute multiplier** is the
baseline compute that the fit needs to reach the variant's final loss, divided by the compute the
variant spent: 2.0 means the change is worth doubling the baseline's compute (the "effective
compute" of Ho et al. 2024, "Algorithmic progress in language models"). Its interval is the
2.5-97.5 percentile range of the multiplier over draws of the fit's parameters (from their
estimated covariance) and, with several seeds, of the variant's mean loss (from its t
distribution over the seeds), so it carries both uncertainties. A draw whose floor E lies at or
above the loss never reaches it: it needs infinite compute and stays in the draws as +inf, so an
interval's upper end can be unbounded (written null with ``ci_high_unbounded`` in JSON). Draws
outside the law's domain (A or alpha not positive: a loss that does not fall with compute) are
left out; fewer than half the draws inside it gives no interval. A loss below the fit's own
floor E is beyond what any baseline compute reaches (no multiplier); a required compute outside
the ladder's range is marked as an extrapolation.

**The fit's verdict.** The interval assumes the law holds, so a multiplier is only given when
the fit is usable (``fit["usable"]``); otherwise ``fit["problems"]`` says why, in words, and
every multiplier is None with that reason. The fit is unusable when any of these holds:

1. a parameter sits on a bound of the search (its standard error then means nothing): E or A
   under 1e-3 of the ladder's lowest mean loss (a floor or an amplitude of about 0: the ladder
   does not bend toward a floor, or does not fall), alpha under 1e-3 or within 1e-3 (relative)
   of its cap ALPHA_MAX (a step);
2. a standard error could not be estimated, or alpha's is at least alpha itself;
3. the residuals are systematic, read on the rung means (seed means, ordered by compute), and
   only once their RMS reaches 1e-4 nats (below that every deviation is rounding): their
   signs are all one, or a one-sided Wald-Wolfowitz runs test (exact null distribution) finds
   too few sign runs at p < 0.05 (only eight rungs or more can reach that: on a shorter
   ladder only the one-sign rule and the F test can fire); or, with several seeds, the lack-of-fit
   F test (rung means' deviations from the curve against the seeds' scatter within rungs;
   skipped when the seeds agree to rounding) rejects the law at p < 0.05;
4. the RMS residual of the rung means is not under half the smallest |variant loss - baseline
   loss| among the compared configurations: the curve misses its own rungs by as much as an
   effect it would convert.

Whatever the verdict, each configuration also gets an **interpolation between rungs**: the
baseline compute at which the ladder's seed-mean losses, joined linearly in log compute and
ordered by compute, first reach its loss; only inside the ladder's range (outside it, "beyond the
ladder"). It assumes no law, and is what the report shows when the law does not hold.

**In a tuned study** each configuration is converted at its tuned choice (``choices``: the
candidate run with the lowest mean validation loss, as the tuned comparison picks it), not at
its written settings, so a multiplier answers "what is this change worth once both sides are
tuned". The ladder is the baseline at its written settings; when the baseline's own choice is
another candidate, ``ladder_is_baseline_choice`` is False and the report says so.
"""

from __future__ import annotations

import math
import warnings
from itertools import pairwise
from typing import Any

import numpy as np
from scipy.optimize import curve_fit
from scipy.stats import f as f_dist
from scipy.stats import t as t_dist

from lmablate.analysis.rundata import StudyData

DRAWS = 2000  # parameter draws for a one-seed interval
ALPHA_MAX = 10.0  # the exponent's upper bound in the search
AT_BOUND = 1e-3  # this close to a bound (relative to its scale), a parameter sits on it
SYSTEMATIC_P = 0.05  # runs test and lack-of-fit F test
SYSTEMATIC_FLOOR = 1e-4  # nats: rung residuals below this RMS are never called systematic
RMS_FRACTION = 0.5  # the rung RMS must be under this fraction of the smallest effect


def power_law(c: np.ndarray, e: float, a: float, alpha: float) -> np.ndarray:
    return e + a * np.power(c, -alpha)


def fit_power_law(compute: list[float], loss: list[float]) -> dict[str, Any] | None:
    """Least-squares E, A, alpha of L = E + A c^-alpha (compute already relative to C0), with
    standard errors and the covariance; None when the points cannot fit three parameters."""
    c, y = np.asarray(compute, float), np.asarray(loss, float)
    if len(set(c.tolist())) < 3:
        return None
    start = (max(0.0, float(y.min()) - 0.5), max(float(y.max() - y.min()), 1e-3), 0.3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unestimable covariance is reported, not warned
            params, cov = curve_fit(
                power_law,
                c,
                y,
                p0=start,
                bounds=([0.0, 0.0, 0.0], [np.inf, np.inf, ALPHA_MAX]),
                maxfev=20000,
            )
    except (RuntimeError, ValueError):
        return None
    errors = np.sqrt(np.diag(cov)) if np.all(np.isfinite(cov)) else [None] * 3
    residual = y - power_law(c, *params)
    return {
        "E": float(params[0]),
        "A": float(params[1]),
        "alpha": float(params[2]),
        "se": {
            k: None if v is None else float(v)
            for k, v in zip(("E", "A", "alpha"), errors, strict=True)
        },
        "covariance": cov.tolist() if np.all(np.isfinite(cov)) else None,
        "points": len(y),
        "rmse": float(np.sqrt(np.mean(residual**2))),
    }


def runs_test_p(signs: list[bool]) -> float:
    """One-sided p of a Wald-Wolfowitz runs test: the chance of as few sign runs as ``signs``
    has, or fewer, when every order of its signs is equally likely (exact)."""
    n1, n2 = sum(signs), len(signs) - sum(signs)
    if n1 == 0 or n2 == 0:
        return 1.0  # one sign: no test (the one-sign rule reads it)
    runs = 1 + sum(a != b for a, b in pairwise(signs))

    def ways(r: int) -> int:  # orders with exactly r runs
        k = r // 2
        if r % 2 == 0:
            return 2 * math.comb(n1 - 1, k - 1) * math.comb(n2 - 1, k - 1)
        return math.comb(n1 - 1, k) * math.comb(n2 - 1, k - 1) + math.comb(
            n1 - 1, k - 1
        ) * math.comb(n2 - 1, k)

    return sum(ways(r) for r in range(2, runs + 1)) / math.comb(n1 + n2, n1)


def rung_residuals(fit: dict[str, Any], rungs: list[tuple[float, list[float]]]) -> list[float]:
    """Each rung's seed-mean loss minus the fitted curve at its compute."""
    law = (fit["E"], fit["A"], fit["alpha"])
    return [float(np.mean(losses)) - float(power_law(c, *law)) for c, losses in rungs]


def fit_verdict(
    fit: dict[str, Any], rungs: list[tuple[float, list[float]]], effects: dict[str, float]
) -> list[str]:
    """The rules of the module docstring, as plain-English problems (none: usable). ``rungs``
    are (relative compute, seed losses) ordered by compute; ``effects`` the compared
    configurations' |loss - baseline loss|."""
    problems = []
    e, a, alpha = fit["E"], fit["A"], fit["alpha"]
    scale = min(float(np.mean(losses)) for _, losses in rungs)  # nats, for E and A
    for name, value, tolerance in (("E", e, scale), ("A", a, scale), ("alpha", alpha, 1.0)):
        if value <= AT_BOUND * tolerance:
            problems.append(
                f"{name} sits on its lower bound ({name} = {value:.3g}, the search stops at 0)"
            )
    if alpha >= ALPHA_MAX * (1 - AT_BOUND):
        problems.append(f"alpha sits on its upper bound ({alpha:.4g}, the search's cap)")
    se = fit["se"]
    if any(v is None or not math.isfinite(v) for v in se.values()):
        problems.append("the parameters' standard errors could not be estimated")
    elif se["alpha"] >= alpha:
        problems.append(
            f"alpha's standard error ({se['alpha']:.3g}) is as large as alpha ({alpha:.3g})"
        )
    residuals = rung_residuals(fit, rungs)
    rung_rms = math.sqrt(sum(r * r for r in residuals) / len(residuals))
    if rung_rms >= SYSTEMATIC_FLOOR:
        signs = [r > 0 for r in residuals]
        p = runs_test_p(signs)
        if len(set(signs)) == 1:
            problems.append("the residuals are systematic: every rung lies on the same side")
        elif p < SYSTEMATIC_P:
            problems.append(
                f"the residuals are systematic: {len(residuals)} rungs ordered by compute "
                f"change sign too seldom (runs test p = {p:.2g})"
            )
        pure = sum(float(np.sum((np.asarray(ls) - np.mean(ls)) ** 2)) for _, ls in rungs)
        points = sum(len(ls) for _, ls in rungs)
        df_lack, df_pure = len(rungs) - 3, points - len(rungs)
        if df_lack >= 1 and df_pure >= 1 and pure / df_pure > 1e-18:
            lack = sum(len(ls) * r * r for (_, ls), r in zip(rungs, residuals, strict=True))
            p = float(f_dist.sf((lack / df_lack) / (pure / df_pure), df_lack, df_pure))
            if p < SYSTEMATIC_P:
                problems.append(
                    "the residuals are systematic: the rungs miss the curve by more than the "
                    f"seeds' scatter (lack-of-fit F test p = {p:.2g})"
                )
    if effects:
        smallest = min(effects, key=effects.get)  # type: ignore[arg-type]
        if rung_rms >= RMS_FRACTION * effects[smallest]:
            problems.append(
                f"the RMS residual of the rung means ({rung_rms:.3g}) is not under half the "
                f"smallest effect it would convert ({smallest}: {effects[smallest]:.3g} from "
                "the baseline)"
            )
    return problems


def compute_to_reach(loss: float, e: float, a: float, alpha: float) -> float | None:
    """Relative compute at which the fitted baseline reaches ``loss``: inf at or below its
    floor E (never reached); None outside the law's domain (A or alpha not positive)."""
    if a <= 0 or alpha <= 0:
        return None
    if loss <= e:
        return math.inf
    return (a / (loss - e)) ** (1.0 / alpha)


def draw_multipliers(params: np.ndarray, losses: np.ndarray, compute: float) -> np.ndarray:
    """The multiplier under each draw of (E, A, alpha) and of the loss: +inf where the draw's
    floor is at or above the loss, nan outside the law's domain."""
    values = [compute_to_reach(loss, *p) for p, loss in zip(params, losses, strict=True)]
    return np.array([math.nan if v is None else v / compute for v in values])


def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    """2.5 and 97.5 percentiles (linear interpolation, as numpy's default) of values that may
    hold +inf: a percentile that interpolates towards an infinite value is infinite (numpy
    gives nan there)."""
    ordered = np.sort(values)
    out = []
    for q in (2.5, 97.5):
        position = q / 100 * (len(ordered) - 1)
        lo, hi = math.floor(position), math.ceil(position)
        if math.isinf(ordered[lo]) or (math.isinf(ordered[hi]) and position > lo):
            out.append(math.inf)
        else:
            out.append(float(ordered[lo] + (ordered[hi] - ordered[lo]) * (position - lo)))
    return out[0], out[1]


def interpolate_ladder(ladder: list[tuple[float, float]], loss: float) -> dict[str, Any]:
    """The compute at which the piecewise-linear (in log compute) curve through the ladder's
    (relative compute, seed-mean loss) points, ordered by compute, first reaches ``loss``;
    None with the side it lies beyond when that is outside the ladder's range."""
    points = sorted(ladder)
    if loss > points[0][1]:  # the cheapest rung already does better
        return {"compute": None, "beyond": "cheaper than the cheapest rung"}
    if loss == points[0][1]:
        return {"compute": points[0][0], "beyond": None}
    for (c_a, l_a), (c_b, l_b) in pairwise(points):
        if l_a > loss >= l_b:
            share = (l_a - loss) / (l_a - l_b)
            return {
                "compute": math.exp(math.log(c_a) + share * math.log(c_b / c_a)),
                "beyond": None,
            }
    return {"compute": None, "beyond": "past the largest rung"}


def _interval(
    draws: np.ndarray | None, losses: list[float], compute: float, rng: np.random.Generator
) -> tuple[float | None, float | None, str]:
    if draws is None:
        return None, None, "none: the fit's covariance could not be estimated"
    # both uncertainties at once: the fit's parameters, and (with seeds) the loss
    loss = sum(losses) / len(losses)
    if len(losses) >= 2:
        sem = float(np.std(losses, ddof=1) / math.sqrt(len(losses)))
        noise = sem * t_dist.rvs(len(losses) - 1, size=DRAWS, random_state=rng)
        source = f"fit uncertainty and seeds ({len(losses)}): parameter and loss draws"
    else:
        noise = np.zeros(DRAWS)
        source = "fit uncertainty (one seed): parameter draws"
    values = draw_multipliers(draws, loss + noise, compute)
    inside = values[~np.isnan(values)]  # draws that never reach the loss stay, as +inf
    if len(inside) < DRAWS // 2:
        return None, None, "none: most parameter draws leave the law's domain (A or alpha <= 0)"
    low, high = percentile_interval(inside)
    return low, high, source + ", 2.5-97.5 percentiles (draws below their floor count as +inf)"


def compute_multipliers(
    study: StudyData, per_run: list[dict[str, Any]], choices: dict[str, str] | None = None
) -> dict[str, Any]:
    """The ladder's fit and every other configuration's multiplier; {} without a ladder.
    ``choices``: in a tuned study, the run (candidate) that represents each configuration."""
    choices = choices or {}
    rungs: dict[str, float] = (study.study.get("budget") or {}).get("ladder_variants") or {}
    if not rungs:
        return {}
    complete = [m for m in per_run if m["status"] == "complete" and m["total_flops"]]
    base = [m["total_flops"] for m in complete if m["variant"] == "baseline"]
    if not base:
        return {"fit": None, "reason": "the baseline did not complete"}
    c0 = sum(base) / len(base)
    ladder = [m for m in complete if m["variant"] == "baseline" or m["variant"] in rungs]
    fit = fit_power_law([m["total_flops"] / c0 for m in ladder], [m["score"] for m in ladder])
    if fit is None:
        return {"fit": None, "reason": "fewer than three ladder budgets completed"}
    fit["C0_flops"] = c0
    # an exponent whose standard error exceeds it: the ladder does not pin the curve down
    fit["well_determined"] = fit["se"]["alpha"] is not None and fit["se"]["alpha"] < fit["alpha"]
    by_rung: dict[str, list[dict[str, Any]]] = {}
    for m in ladder:
        by_rung.setdefault(m["variant"], []).append(m)
    steps = sorted(
        (
            {
                "variant": name,
                "relative_compute": sum(m["total_flops"] for m in rows) / len(rows) / c0,
                "val_loss": sum(m["score"] for m in rows) / len(rows),
                "losses": [m["score"] for m in rows],
                "seeds": len(rows),
            }
            for name, rows in by_rung.items()
        ),
        key=lambda s: s["relative_compute"],
    )
    curve = [(s["relative_compute"], s["val_loss"]) for s in steps]
    base_loss = next(s["val_loss"] for s in steps if s["variant"] == "baseline")
    variants = {}
    runs = {}
    for variant in study.compared:  # not the rungs, nor a tuned study's candidates
        runs[variant] = choices.get(variant, variant)
        rows = [m for m in complete if m["variant"] == runs[variant]]
        if variant != "baseline" and rows:
            variants[variant] = rows
    effects = {
        v: abs(sum(m["score"] for m in rows) / len(rows) - base_loss)
        for v, rows in variants.items()
    }
    points = [(s["relative_compute"], s["losses"]) for s in steps]
    fit["rung_residuals"] = rung_residuals(fit, points)
    fit["rung_rmse"] = math.sqrt(float(np.mean(np.square(fit["rung_residuals"]))))
    fit["problems"] = fit_verdict(fit, points, effects)
    fit["usable"] = not fit["problems"]
    span = (steps[0]["relative_compute"], steps[-1]["relative_compute"])
    out: dict[str, Any] = {
        "fit": fit,
        "ladder_range": span,
        "ladder": steps,
        "ladder_monotone": all(a[1] > b[1] for a, b in pairwise(curve)),
        "tuned": bool(choices),
        "ladder_is_baseline_choice": choices.get("baseline", "baseline") == "baseline",
        "multipliers": {},
    }
    rng = np.random.default_rng(0)
    draws = None
    if fit["covariance"] is not None and fit["usable"]:
        draws = rng.multivariate_normal(
            [fit["E"], fit["A"], fit["alpha"]], fit["covariance"], DRAWS
        )
    for variant, rows in variants.items():
        losses = [m["score"] for m in rows]
        loss = sum(losses) / len(losses)
        compute = sum(m["total_flops"] for m in rows) / len(rows) / c0
        interpolation = interpolate_ladder(curve, loss)
        row: dict[str, Any] = {
            "run": runs[variant],
            "val_loss": loss,
            "relative_compute": compute,
            "interpolation": {
                "baseline_compute_to_match": interpolation["compute"],
                "beyond_the_ladder": interpolation["beyond"],
            },
        }
        if not fit["usable"]:
            out["multipliers"][variant] = row | {
                "baseline_compute_to_match": None,
                "multiplier": None,
                "reason": "the power-law fit is unusable: " + "; ".join(fit["problems"]),
                "ci_low": None,
                "ci_high": None,
                "ci_low_unbounded": False,
                "ci_high_unbounded": False,
                "interval_from": "none: the power-law fit is unusable",
                "extrapolated": False,
                "below_fit_floor": False,
            }
            continue
        needed = compute_to_reach(loss, fit["E"], fit["A"], fit["alpha"])
        value = None if needed is None or math.isinf(needed) else needed / compute
        low, high, source = _interval(draws, losses, compute, rng)
        out["multipliers"][variant] = row | {
            "baseline_compute_to_match": None if value is None else needed,
            "multiplier": value,
            "reason": None if value is not None else "its loss is at or below the fit's floor E",
            "ci_low": low,
            "ci_high": high,
            "ci_low_unbounded": low is not None and math.isinf(low),
            "ci_high_unbounded": high is not None and math.isinf(high),
            "interval_from": source,
            "extrapolated": value is not None and not (span[0] <= needed <= span[1]),
            "below_fit_floor": value is None,
        }
    return out
