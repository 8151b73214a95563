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
distribution over the seeds), so it carries both uncertainties. A loss below the
fit's floor E is beyond what any baseline compute reaches (no multiplier); a required compute
outside the ladder's range is marked as an extrapolation.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy.optimize import curve_fit
from scipy.stats import t as t_dist

from lmablate.analysis.rundata import StudyData

DRAWS = 2000  # parameter draws for a one-seed interval


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
                bounds=([0.0, 0.0, 0.0], [np.inf, np.inf, 10.0]),
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


def compute_to_reach(loss: float, e: float, a: float, alpha: float) -> float | None:
    """Relative compute at which the fitted baseline reaches ``loss``; None below the floor."""
    if loss <= e or a <= 0 or alpha <= 0:
        return None
    return (a / (loss - e)) ** (1.0 / alpha)


def _multiplier(loss: float, compute: float, fit: dict[str, Any]) -> float | None:
    needed = compute_to_reach(loss, fit["E"], fit["A"], fit["alpha"])
    return None if needed is None else needed / compute


def compute_multipliers(study: StudyData, per_run: list[dict[str, Any]]) -> dict[str, Any]:
    """The ladder's fit and every other configuration's multiplier; {} without a ladder."""
    rungs: dict[str, float] = (study.study.get("budget") or {}).get("ladder_variants") or {}
    if not rungs:
        return {}
    complete = [m for m in per_run if m["status"] == "complete" and m["total_flops"]]
    base = [m["total_flops"] for m in complete if m["variant"] == "baseline"]
    if not base:
        return {"fit": None, "reason": "the baseline did not complete"}
    c0 = sum(base) / len(base)
    ladder = [m for m in complete if m["variant"] == "baseline" or m["variant"] in rungs]
    fit = fit_power_law([m["total_flops"] / c0 for m in ladder], [m["eval_loss"] for m in ladder])
    if fit is None:
        return {"fit": None, "reason": "fewer than three ladder budgets completed"}
    fit["C0_flops"] = c0
    # an exponent whose standard error exceeds it: the ladder does not pin the curve down
    fit["well_determined"] = fit["se"]["alpha"] is not None and fit["se"]["alpha"] < fit["alpha"]
    span = (min(m["total_flops"] for m in ladder) / c0, max(m["total_flops"] for m in ladder) / c0)
    out: dict[str, Any] = {"fit": fit, "ladder_range": span, "multipliers": {}}
    rng = np.random.default_rng(0)
    draws = None
    if fit["covariance"] is not None:
        draws = rng.multivariate_normal(
            [fit["E"], fit["A"], fit["alpha"]], fit["covariance"], DRAWS
        )
    for variant in study.compared:  # not the rungs, nor a tuned study's candidates
        if variant == "baseline":
            continue
        rows = [m for m in complete if m["variant"] == variant]
        if not rows:
            continue
        losses = [m["eval_loss"] for m in rows]
        loss = sum(losses) / len(losses)
        compute = sum(m["total_flops"] for m in rows) / len(rows) / c0
        value = _multiplier(loss, compute, fit)
        low = high = None
        if draws is not None:
            # both uncertainties at once: the fit's parameters, and (with seeds) the loss
            if len(losses) >= 2:
                sem = float(np.std(losses, ddof=1) / math.sqrt(len(losses)))
                noise = sem * t_dist.rvs(len(losses) - 1, size=DRAWS, random_state=rng)
                source = f"fit uncertainty and seeds ({len(losses)}): parameter and loss draws"
            else:
                noise = np.zeros(DRAWS)
                source = "fit uncertainty (one seed): parameter draws"
            values = [
                compute_to_reach(loss + eps, *params)
                for params, eps in zip(draws, noise, strict=True)
                if params[1] > 0 < params[2]
            ]
            values = [v / compute for v in values if v is not None]
            if len(values) >= DRAWS // 2:
                low, high = (float(v) for v in np.percentile(values, [2.5, 97.5]))
                source += ", 2.5-97.5 percentiles"
            else:
                source = (
                    "none: the fit is too uncertain (most parameter draws reach the loss at no "
                    "compute)"
                )
        else:
            source = "none: the fit's covariance could not be estimated"
        needed = None if value is None else value * compute
        out["multipliers"][variant] = {
            "val_loss": loss,
            "relative_compute": compute,
            "baseline_compute_to_match": needed,
            "multiplier": value,
            "ci_low": low,
            "ci_high": high,
            "interval_from": source,
            "extrapolated": needed is not None and not (span[0] <= needed <= span[1]),
            "below_fit_floor": value is None,
        }
    return out
