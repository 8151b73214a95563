"""Per-run numbers of a study: every measure the report reads off a run's summary and logs,
the seeds' mean curves, and the late-slope convergence reading. No torch.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from lmablate.analysis.efficiency import compute_to_reach
from lmablate.analysis.rundata import RunData, eval_curve
from lmablate.analysis.stats import (
    late_slope,
)

PHASE_FRACTION = 0.1  # the early and late phases: the first and last tenth of the logged steps


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def mean_curve(curves: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Seeds' eval curves averaged at the steps they all evaluated (budgets averaged too)."""
    curves = [c for c in curves if c]
    if not curves:
        return []
    steps = sorted(set.intersection(*({p["step"] for p in c} for c in curves)))
    by_step = [{p["step"]: p for p in c} for c in curves]
    out = []
    for step in steps:
        point: dict[str, Any] = {"step": step}
        for key in ("val_loss", "score", "tokens", "flops", "time_s"):
            values = [c[step][key] for c in by_step]
            point[key] = None if any(v is None for v in values) else sum(values) / len(values)
        out.append(point)
    return out


def mean_of(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


CONVERGED_TOLERANCE = 0.01  # nats: a decline smaller than this over the late window is none


def convergence(slope) -> str:
    """converged | still falling | rising | undetermined (see the module docstring)."""
    if slope is None or slope.ci_low is None or not slope.tokens:
        return "undetermined"
    tolerance = -CONVERGED_TOLERANCE / (slope.tokens / 1e6)  # loss per million tokens
    if slope.ci_low > tolerance:
        return "rising" if slope.reading == "rising" else "converged"
    return "still falling" if slope.reading == "still falling" else "undetermined"


def converged(slope) -> bool | None:
    status = convergence(slope)
    return None if status == "undetermined" else status == "converged"


def mean_train_curve(runs: list[RunData]) -> list[tuple[float, float]]:
    """Seeds' logged training losses averaged at the token counts they all logged."""
    series = [{r["tokens_seen"]: r["loss"] for r in run.train_records} for run in runs]
    series = [s for s in series if s]
    if not series:
        return []
    shared = sorted(set.intersection(*(set(s) for s in series)))
    return [(x, sum(s[x] for s in series) / len(series)) for x in shared]


def run_metrics(run: RunData, target: float | None) -> dict[str, Any]:
    """Every per-run number the report uses."""
    summary = run.summary or {}
    train, evals = run.train_records, run.eval_records
    losses = [r["loss"] for r in train]
    phase = max(1, math.ceil(len(losses) * PHASE_FRACTION))
    step_times = [r["step_time"] for r in train]
    curve = eval_curve(run)
    initial = evals[0]["val_loss"] if evals else None
    final = summary.get("final_val_loss")
    slope = late_slope([(r["tokens_seen"], r["loss"]) for r in train])
    avg_step = mean_of(step_times)
    return {
        "variant": run.variant,
        "seed": run.seed,
        "status": run.status,
        "message": "; ".join(run.damaged) or summary.get("message"),
        "train_loss": summary.get("final_train_loss"),
        "eval_loss": final,
        "val_bpb": summary.get("final_val_bpb"),
        "score": run.final_score,  # the study's measure: eval_loss, or val_bpb across tokenizers
        "accuracy": summary.get("final_val_accuracy"),
        "top5_accuracy": summary.get("final_val_top5_accuracy"),
        "perplexity": summary.get("final_val_ppl"),
        "avg_confidence": summary.get("final_val_confidence"),
        "entropy": summary.get("final_val_entropy"),
        "best_val_loss": summary.get("best_val_loss"),
        "convergence_total_improvement": (initial - final) / initial if final and initial else None,
        "convergence_early_phase_loss": mean_of(losses[:phase]) if losses else None,
        "convergence_late_phase_loss": mean_of(losses[-phase:]) if losses else None,
        "convergence_converged": converged(slope),
        "convergence_status": convergence(slope),
        "convergence_late_slope": slope.slope if slope else None,
        "convergence_late_slope_ci_low": slope.ci_low if slope else None,
        "convergence_late_slope_ci_high": slope.ci_high if slope else None,
        "convergence_late_reading": slope.reading if slope else None,
        "efficiency_avg_step_time": avg_step,
        "efficiency_steps_per_second": 1 / avg_step if avg_step else None,
        "efficiency_step_time_std": statistics.stdev(step_times) if len(step_times) > 1 else None,
        "tokens_seen": summary.get("tokens_seen"),
        "epochs": summary.get("epochs"),
        "params": (summary.get("params") or {}).get("total"),
        "non_embedding_params": (summary.get("params") or {}).get("non_embedding"),
        "total_flops": summary.get("total_flops"),
        "tokens_per_s": summary.get("tokens_per_s"),
        "mfu": summary.get("mfu"),
        "wall_time": summary.get("wall_time_s"),
        "train_time": summary.get("train_time_s"),
        "flops_to_target": compute_to_reach(curve, target, "flops") if target else None,
        "tokens_to_target": compute_to_reach(curve, target, "tokens") if target else None,
        "time_to_target": compute_to_reach(curve, target, "time_s") if target else None,
    }


# ------------------------------------------------------------------------------ study level

AGGREGATED = (
    "train_loss",
    "eval_loss",
    "val_bpb",
    "score",
    "accuracy",
    "top5_accuracy",
    "perplexity",
    "avg_confidence",
    "entropy",
    "best_val_loss",
    "convergence_total_improvement",
    "convergence_early_phase_loss",
    "convergence_late_phase_loss",
    "efficiency_avg_step_time",
    "efficiency_steps_per_second",
    "efficiency_step_time_std",
    "tokens_seen",
    "epochs",
    "params",
    "non_embedding_params",
    "total_flops",
    "tokens_per_s",
    "mfu",
    "wall_time",
    "train_time",
    "flops_to_target",
    "tokens_to_target",
    "time_to_target",
)
