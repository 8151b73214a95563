"""Statistics over seeds: intervals, tests against the baseline, noise floor, verdicts. No torch.

All distributions come from ``scipy.stats``. Conventions:

- A 95% confidence interval of a mean over n seeds is mean ± t(0.975, n-1) · s / √n.
- A variant is compared with the baseline on the per-seed differences over the seeds both
  completed (a paired t-test: replicate k shares the initialization seed and batch order, so
  pairing removes that shared noise); with fewer than two shared seeds, Welch's
  unequal-variance t-test on whatever each side has. Effect
  size is Cohen's d: d_z = mean difference / SD of differences when paired, the difference over
  the pooled SD when not.
- p-values are adjusted for testing every variant against the baseline with Holm's step-down
  method (Holm 1979), which controls the family-wise error rate.
- With the final evaluation's loss per validation document (``eval_documents.json``), every
  difference from the baseline also gets a paired bootstrap interval over documents: the
  uncertainty from which documents were scored, which exists even with one seed. It is never
  a substitute for seed variance, and the report labels it as what it is.
- The noise floor is the smallest difference the study can detect: the half-width of the 95%
  interval of a difference between two configurations with the baseline's seed-to-seed SD,
  t(0.975, n-1) · s_baseline · √(2/n). A difference smaller than it is "within noise", even if a
  test happens to reject, and is never reported as a win.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
ALPHA = 0.05


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float | None  # sample SD (n - 1); None with one value
    ci_low: float | None
    ci_high: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(values: list[float]) -> Summary | None:
    """Mean, SD and 95% t-interval of a sample; no interval from a single value."""
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Summary(n, mean, None, None, None)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    variant: str
    test: str  # "paired t", "Welch t", or "none" (why in note)
    n_variant: int
    n_baseline: int
    difference: float  # variant mean - baseline mean (negative: lower loss than the baseline)
    ci_low: float | None
    ci_high: float | None
    statistic: float | None
    df: float | None
    p_value: float | None
    p_holm: float | None
    effect_size: float | None  # Cohen's d (d_z when paired)
    verdict: str  # better | worse | no detectable difference | within noise | untested
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _t_half_width(std_error: float, df: float) -> float:
    return scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, df) * std_error


def compare(variant: str, values: dict[int, float], baseline: dict[int, float]) -> Comparison:
    """Compare a variant's per-seed values with the baseline's (both keyed by seed)."""
    shared = sorted(set(values) & set(baseline))
    if len(shared) >= 2:  # compare on the replicates both completed, paired seed by seed
        values = {seed: values[seed] for seed in shared}
        baseline = {seed: baseline[seed] for seed in shared}
    v, b = list(values.values()), list(baseline.values())
    difference = sum(v) / len(v) - sum(b) / len(b)
    empty = dict(
        ci_low=None,
        ci_high=None,
        statistic=None,
        df=None,
        p_value=None,
        p_holm=None,
        effect_size=None,
    )
    if len(shared) >= 2:
        diffs = [values[s] - baseline[s] for s in shared]
        n = len(diffs)
        sd = math.sqrt(sum((d - difference) ** 2 for d in diffs) / (n - 1))
        if sd <= 1e-12 * max(1.0, abs(difference)):  # rounding noise is not variance
            return Comparison(
                variant,
                "none",
                n,
                n,
                difference,
                **empty,
                verdict="untested",
                note="identical per-seed differences: no variance to test against",
            )
        result = scipy_stats.ttest_rel([values[s] for s in shared], [baseline[s] for s in shared])
        half = _t_half_width(sd / math.sqrt(n), n - 1)
        return Comparison(
            variant,
            "paired t",
            n,
            n,
            difference,
            difference - half,
            difference + half,
            float(result.statistic),
            n - 1,
            float(result.pvalue),
            None,
            difference / sd,
            "",
            "",
        )
    if len(v) >= 2 and len(b) >= 2:
        var_v = scipy_stats.tvar(v)
        var_b = scipy_stats.tvar(b)
        se = math.sqrt(var_v / len(v) + var_b / len(b))
        if se <= 1e-12 * max(1.0, abs(difference)):
            return Comparison(
                variant,
                "none",
                len(v),
                len(b),
                difference,
                **empty,
                verdict="untested",
                note="no seed-to-seed variance to test against",
            )
        df = se**4 / ((var_v / len(v)) ** 2 / (len(v) - 1) + (var_b / len(b)) ** 2 / (len(b) - 1))
        result = scipy_stats.ttest_ind(v, b, equal_var=False)
        pooled = math.sqrt(((len(v) - 1) * var_v + (len(b) - 1) * var_b) / (len(v) + len(b) - 2))
        half = _t_half_width(se, df)
        return Comparison(
            variant,
            "Welch t",
            len(v),
            len(b),
            difference,
            difference - half,
            difference + half,
            float(result.statistic),
            df,
            float(result.pvalue),
            None,
            difference / pooled if pooled else None,
            "",
            "",
        )
    return Comparison(
        variant,
        "none",
        len(v),
        len(b),
        difference,
        **empty,
        verdict="untested",
        note="needs at least two seeds on each side to test",
    )


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def noise_floor(baseline_values: list[float]) -> float | None:
    """Smallest detectable difference given the baseline's seed-to-seed SD (see module doc)."""
    n = len(baseline_values)
    if n < 2:
        return None
    summary = summarize(baseline_values)
    assert summary is not None and summary.std is not None
    return _t_half_width(summary.std * math.sqrt(2 / n), n - 1)


def with_verdicts(comparisons: list[Comparison], floor: float | None) -> list[Comparison]:
    """Holm-adjust the tested comparisons' p-values and give each its verdict."""
    tested = [c for c in comparisons if c.p_value is not None]
    adjusted = dict(
        zip([c.variant for c in tested], holm([c.p_value for c in tested]), strict=True)
    )
    out = []
    for c in comparisons:
        p = adjusted.get(c.variant)
        if p is None:  # untested stays untested, whatever the size of the difference
            out.append(c)
            continue
        if floor is not None and abs(c.difference) <= floor:
            verdict = "within noise"
            note = f"|difference| {abs(c.difference):.4f} is within the noise floor {floor:.4f}"
        elif p < ALPHA:
            verdict = "better" if c.difference < 0 else "worse"
            note = f"Holm-adjusted p = {p:.3g} < {ALPHA}"
        else:
            verdict = "no detectable difference"
            note = f"Holm-adjusted p = {p:.3g} ≥ {ALPHA}"
        out.append(Comparison(**{**asdict(c), "p_holm": p, "verdict": verdict, "note": note}))
    return out


LATE_FRACTION = 0.2  # the late slope is fitted over the last fifth of the tokens seen


@dataclass(frozen=True)
class Slope:
    """A least-squares line through a loss curve's last fifth, in loss per million tokens."""

    slope: float
    ci_low: float | None
    ci_high: float | None
    n_points: int
    tokens: float  # width of the window the line was fitted over
    reading: str  # still falling | flat within noise | rising | too few points

    @property
    def drop(self) -> float:
        """How much loss the line loses over its window (positive while falling)."""
        return -self.slope * self.tokens / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop": self.drop}


def late_slope(points: list[tuple[float, float]]) -> Slope | None:
    """The loss's slope against tokens over the last fifth of a curve's tokens, with a 95%
    t-interval from the scatter of the points about the line (the curve's own noise floor).
    The reading says whether that interval lies below zero (still falling), above it (rising)
    or around it (flat within noise); under three points there is no interval to read."""
    points = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if len(points) < 2:
        return None
    start, end = points[0][0], points[-1][0]
    window = [(x, y) for x, y in points if x >= end - LATE_FRACTION * (end - start)]
    if len(window) < 2:
        window = points[-2:]
    xs = [x / 1e6 for x, _ in window]
    ys = [y for _, y in window]
    width = (window[-1][0] - window[0][0]) or 0.0
    if max(xs) == min(xs):
        return None
    fit = scipy_stats.linregress(xs, ys)
    slope = float(fit.slope)
    if len(window) < 3:
        return Slope(slope, None, None, len(window), width, "too few points")
    half = _t_half_width(float(fit.stderr), len(window) - 2)
    low, high = slope - half, slope + half
    reading = "still falling" if high < 0 else "rising" if low > 0 else "flat within noise"
    return Slope(slope, low, high, len(window), width, reading)


BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class DocumentInterval:
    """A difference in validation loss per target with its paired-bootstrap interval over
    validation documents: the evaluation-sample uncertainty (which documents happened to be
    scored), not seed-to-seed variation."""

    difference: float  # variant - baseline, nats per target
    ci_low: float
    ci_high: float
    documents: int
    targets: int
    resamples: int
    seeds: int  # seeds whose per-document losses were averaged before resampling

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def document_bootstrap(
    variant: list[float],
    baseline: list[float],
    targets: list[int],
    seeds: int = 1,
    resamples: int = BOOTSTRAP_RESAMPLES,
    rng_seed: int = 0,
) -> DocumentInterval | None:
    """Paired percentile bootstrap over documents of (Σ variant nats − Σ baseline nats) /
    Σ targets: documents are drawn with replacement, each bringing both configurations' losses
    on its targets, so what the two share (a hard document is hard for both) cancels. None with
    fewer than two documents."""
    counts = np.asarray(targets, dtype=np.float64)
    diffs = np.asarray(variant, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    n = len(counts)
    if n < 2 or len(diffs) != n or counts.sum() <= 0:
        return None
    rng = np.random.default_rng(rng_seed)
    draws = np.empty(resamples)
    block = max(1, 2_000_000 // n)  # resamples per block: at most ~16 MB of indices at once
    for start in range(0, resamples, block):
        picks = rng.integers(0, n, size=(min(block, resamples - start), n))
        draws[start : start + len(picks)] = diffs[picks].sum(1) / counts[picks].sum(1)
    low, high = np.quantile(draws, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return DocumentInterval(
        float(diffs.sum() / counts.sum()),
        float(low),
        float(high),
        n,
        int(counts.sum()),
        resamples,
        seeds,
    )
