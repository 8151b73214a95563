"""The rules that turn numbers into claims, on synthetic run directories with known answers:
efficiency against a target every placed configuration reaches late, stated only beyond the
seeds' uncertainty; the edge of a one-factor series; the late slope and the tolerance behind
"converged"; matched-budget labels; the generalization-gap flag; correlations over
configurations; and the package's data files."""

from __future__ import annotations

import csv
import json
import math
import random
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from lmablate.analysis.findings import analyze
from lmablate.analysis.rundata import load_study_dir
from lmablate.analysis.stats import late_slope
from lmablate.config.run import RunConfig
from lmablate.report.package import REFERENCE_COLUMNS, build_report
from lmablate.report.plotting import variant_styles

Curve = list[tuple[int, float]]  # (tokens seen, loss)


def write_run(
    root: Path, variant: str, seed: int, evals: Curve, train: dict | None = None, **fields
) -> None:
    """One complete run: validation loss at ``evals``, training loss at ``train`` (default: the
    validation curve plus 0.01), 100 tokens per step, 1,000 FLOPs per token."""
    run = root / "runs" / variant / f"seed-{seed}"
    run.mkdir(parents=True)
    train_curve = train if train is not None else {t: loss + 0.01 for t, loss in evals if t}
    records = [
        {"kind": "train", "step": t // 100, "loss": loss, "step_time": 0.1, "tokens_seen": t}
        for t, loss in sorted(train_curve.items())
    ]
    records += [
        {
            "kind": "eval",
            "step": t // 100,
            "val_loss": loss,
            "val_bpb": loss / 3,
            "val_accuracy": 0.1,
            "val_ppl": math.exp(loss),
            "tokens_seen": t,
        }
        for t, loss in evals
    ]
    records.sort(key=lambda r: (r["step"], r["kind"] == "train"))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    tokens = evals[-1][0]
    resolved = RunConfig().model_dump(mode="json")
    train_section = {
        **resolved["train"],
        "max_steps": tokens // 100,
        "warmup_steps": 2,
        "data_seed": seed,
        **fields,
    }
    (run / "config.json").write_text(
        json.dumps({"model": resolved["model"], "train": train_section})
    )
    final = evals[-1][1]
    (run / "summary.json").write_text(
        json.dumps(
            {
                "status": "complete",
                "step": tokens // 100,
                "final_val_loss": final,
                "final_val_bpb": final / 3,
                "final_val_accuracy": 0.1,
                "final_train_loss": final + 0.01,
                "tokens_seen": tokens,
                "flops_per_token": 1000,
                "total_flops": tokens * 1000,
                "epochs": 1.0,
                "params": {"total": 10, "non_embedding": 5},
                "vocab_size": 2048,
                "precision": "bf16",
                "device": "cuda:0",
                "eval": {"targets": 4096, "bytes": 15000, "targets_digest": "abc"},
                "data": {
                    "documents": {"train": 900, "val": 100, "total": 1000},
                    "tokens": {"train": 800_000, "val": 90_000},
                },
                "environment": {
                    "device": "NVIDIA H100 80GB HBM3",
                    "device_memory_bytes": 80 * 2**30,
                    "cpu": "AMD EPYC 9654",
                    "python": "3.11.7",
                    "torch": "2.13.0",
                    "cuda": "12.8",
                    "lmablate_version": "0.1.0",
                },
            }
        )
    )


def write_study(root: Path, variants: dict[str, dict], seeds: int = 1) -> Path:
    """A resolved study.yaml (defaults everywhere) with these variants' changes."""
    resolved = RunConfig().model_dump(mode="json")
    (root / "study.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "claims",
                "seeds": list(range(seeds)),
                "data": resolved["data"],
                "baseline": {"model": resolved["model"], "train": resolved["train"]},
                "variants": variants,
            }
        )
    )
    return root


def line(start: float, end: float, tokens: int, points: int = 11) -> Curve:
    """A validation curve falling linearly from ``start`` to ``end`` over ``tokens``."""
    return [
        (round(tokens * i / (points - 1)), start + (end - start) * i / (points - 1))
        for i in range(points)
    ]


# ------------------------------------------------------------------------------ efficiency


def test_a_short_run_better_at_every_budget_is_more_efficient(tmp_path):
    """A run half as long that is below the baseline at every budget they share never reaches
    the baseline's final loss; against the common target it ranks first, as it should."""
    write_study(tmp_path, {"short": {"max_steps": 10}})
    write_run(tmp_path, "baseline", 0, line(8.0, 3.0, 2000))
    write_run(tmp_path, "short", 0, line(8.0, 4.0, 1000), max_steps=10)
    analysis = analyze(load_study_dir(tmp_path))

    assert analysis.target_loss == pytest.approx(4.0)  # the higher of the two lowest losses
    assert [v for v, _ in analysis.efficiency_ranking] == ["short", "baseline"]
    # baseline: 8 - 5t/2000 = 4 at t = 1600 tokens; short reaches 4.0 at its end, 1000 tokens
    assert analysis.per_variant["baseline"]["flops_to_target"] == pytest.approx(1600 * 1000)
    assert analysis.per_variant["short"]["flops_to_target"] == pytest.approx(1000 * 1000)
    assert analysis.findings["lowest_flops_to_target_config"] == "short"
    # one seed: the margin is untested, so "most efficient" is not stated as a finding
    assert analysis.findings["most_efficient_config"] is None
    assert analysis.findings["not_reaching_target"] == []
    # the better-trained baseline still ranks first on final loss: the two claims differ
    assert analysis.ranking[0][0] == "baseline"


def test_every_ranked_configuration_is_placed_on_efficiency(tmp_path):
    finals = {"baseline": 3.0, "a": 3.4, "b": 2.8, "c": 3.9}
    write_study(tmp_path, {v: {"learning_rate": 0.001 * (i + 2)} for i, v in enumerate("abc")})
    for variant, final in finals.items():
        write_run(tmp_path, variant, 0, line(8.0, final, 2000))
    analysis = analyze(load_study_dir(tmp_path))
    assert analysis.target_loss == pytest.approx(3.9)
    flops = dict(analysis.efficiency_ranking)
    assert set(flops) == set(finals) and None not in flops.values()
    assert list(flops) == ["b", "baseline", "a", "c"]  # steeper lines reach 3.9 sooner


def test_a_run_that_never_trains_below_its_start_is_not_placed(tmp_path):
    """A curve whose step-0 evaluation is already its lowest loss reaches any target it reaches
    at zero compute: it is named, not ranked first (and not divided by)."""
    write_study(tmp_path, {"stuck": {"learning_rate": 0.01}})
    write_run(tmp_path, "baseline", 0, line(8.0, 3.0, 2000))
    write_run(tmp_path, "stuck", 0, [(0, 5.0), (1000, 6.0), (2000, 7.0)])
    analysis = analyze(load_study_dir(tmp_path))
    assert analysis.efficiency["at_start"] == ["stuck"]
    assert [v for v, _ in analysis.efficiency_ranking] == ["baseline"]
    assert analysis.findings["lowest_flops_to_target_config"] == "baseline"


def _with_budget(root: Path, budget: dict) -> None:
    """Add a resolved ``budget`` record (as study.yaml holds it after expansion)."""
    study = yaml.safe_load((root / "study.yaml").read_text())
    study["budget"] = budget
    (root / "study.yaml").write_text(yaml.safe_dump(study))


def test_the_ranking_target_is_reached_late_by_every_configuration_placed(tmp_path):
    """The common target (the weak configuration's best, 4.0) times "fast" at its first
    evaluation, 10% into its run; the ranking target is the highest level that every
    configuration reaching it reaches in the last half of its run: 3.5."""
    write_study(tmp_path, {"fast": {"learning_rate": 0.002}, "weak": {"learning_rate": 1e-5}})
    tokens = list(range(0, 2001, 200))
    fast = [8.0, 4.0, 3.9, 3.8, 3.7, 3.6, 3.4, 3.2, 3.0, 2.5, 2.0]
    write_run(tmp_path, "baseline", 0, line(8.0, 2.4, 2000))
    write_run(tmp_path, "fast", 0, list(zip(tokens, fast, strict=True)))
    write_run(tmp_path, "weak", 0, line(8.0, 4.0, 2000))
    analysis = analyze(load_study_dir(tmp_path))
    efficiency = analysis.efficiency

    # levels: the common target 4.0 and three more towards the lowest loss, 2.0
    assert [lv["val_loss"] for lv in efficiency["levels"]] == pytest.approx([4.0, 3.5, 3.0, 2.5])
    common = efficiency["levels"][0]
    assert common["share_of_run"]["fast"] == pytest.approx(0.1)  # timed early: not late
    assert not common["all_late"]
    assert analysis.target_loss == pytest.approx(3.5) and efficiency["late"]
    assert all(row["late"] for row in efficiency["configurations"].values())
    assert analysis.findings["not_reaching_target"] == ["weak"]

    # by hand, in log compute (1,000 FLOPs per token): fast crosses 3.5 half-way between 3.6
    # at 1,000 tokens and 3.4 at 1,200, so at sqrt(1000 * 1200) tokens (linear: 1,100)
    table = analysis.per_variant
    assert table["fast"]["flops_to_target"] == pytest.approx(math.sqrt(1000 * 1200) * 1000)
    # baseline: 8 - 5.6 t / 2000 is 3.52 at 1,600 tokens and 2.96 at 1,800
    fraction = (3.52 - 3.5) / (3.52 - 2.96)
    assert table["baseline"]["flops_to_target"] == pytest.approx(
        1600 * (1800 / 1600) ** fraction * 1000
    )
    assert [v for v, _ in analysis.efficiency_ranking] == ["fast", "baseline"]
    assert efficiency["configurations"]["fast"]["share_of_run"] == pytest.approx(
        math.sqrt(1000 * 1200) / 2000
    )


def test_a_one_seed_small_margin_is_not_a_finding(tmp_path):
    write_study(tmp_path, {"b": {"learning_rate": 0.002}})
    write_run(tmp_path, "baseline", 0, line(8.0, 3.0, 2000))
    write_run(tmp_path, "b", 0, line(8.0, 2.92, 2000))
    analysis = analyze(load_study_dir(tmp_path))
    margin = analysis.findings["efficiency_margin"]
    # the baseline needs all 2,000 tokens; b crosses 3.0 between 3.428 at 1,800 tokens and
    # 2.92 at 2,000, in log compute
    fraction = (3.428 - 3.0) / (3.428 - 2.92)
    assert margin["ratio"] == pytest.approx(2000 / (1800 * (2000 / 1800) ** fraction))
    assert f"{margin['ratio'] - 1:.1%}" == "1.7%"
    assert margin["verdict"] == "untested"
    assert analysis.findings["lowest_flops_to_target_config"] == "b"
    assert analysis.findings["most_efficient_config"] is None

    from lmablate.report.results import key_findings

    text = "\n".join(key_findings(analysis, 1))
    assert "Most Efficient Configuration" not in text
    assert "the margin (1.7%) is not tested" in text and "untested and not a finding" in text


def _three_seeds(tmp_path, finals: dict[str, tuple[float, float, float]]):
    write_study(tmp_path, {v: {"learning_rate": 0.002} for v in finals if v != "baseline"}, 3)
    for variant, values in finals.items():
        for seed, final in enumerate(values):
            write_run(tmp_path, variant, seed, line(8.0, final, 2000))
    return analyze(load_study_dir(tmp_path))


def test_a_margin_beyond_the_seeds_interval_is_a_finding(tmp_path):
    analysis = _three_seeds(
        tmp_path,
        {
            "baseline": (3.0, 3.05, 2.95),
            "b": (2.5, 2.52, 2.47),
            "weak": (3.99, 4.0, 4.01),  # sets the common target; its seeds straddle it
        },
    )
    assert analysis.target_loss == pytest.approx(4.0) and analysis.efficiency["late"]
    margin = analysis.findings["efficiency_margin"]
    assert (margin["best"], margin["runner_up"]) == ("b", "baseline")
    assert margin["verdict"] == "beyond uncertainty" and margin["ratio_ci_low"] > 1
    assert analysis.findings["most_efficient_config"] == "b"
    row = analysis.efficiency["configurations"]["b"]
    assert row["ci_low"] < row["flops"] < row["ci_high"]
    assert analysis.efficiency["configurations"]["weak"]["ci_low"] is None  # a seed misses it

    from lmablate.report.results import key_findings

    text = "\n".join(key_findings(analysis, 3))
    assert "**Most Efficient Configuration:** b" in text and "beyond the seeds'" in text


def test_a_margin_within_the_seeds_interval_is_not_a_finding(tmp_path):
    analysis = _three_seeds(
        tmp_path,
        {"baseline": (3.0, 3.05, 2.95), "b": (2.98, 3.08, 2.92), "weak": (3.99, 4.0, 4.01)},
    )
    assert analysis.findings["efficiency_margin"]["verdict"] == "within uncertainty"
    assert analysis.findings["most_efficient_config"] is None

    from lmablate.report.results import key_findings

    text = "\n".join(key_findings(analysis, 3))
    assert "Most Efficient Configuration" not in text and "beyond seed noise" in text


# ----------------------------------------------------------------------- matched budgets


@pytest.mark.parametrize(
    "match, b_tokens, end_of_schedule",
    [
        ("flops", 2000, {"flops", "tokens"}),
        ("tokens", 2000, {"flops", "tokens"}),
        # not matched, but both runs end at the same tokens and FLOPs: still their ends
        (None, 2000, {"flops", "tokens"}),
        # b trains longer: a reading at the baseline's budget is mid-schedule for b
        (None, 3000, set()),
    ],
)
def test_the_equal_budget_reading_is_labelled_by_where_the_runs_end(
    tmp_path, match, b_tokens, end_of_schedule
):
    write_study(tmp_path, {"b": {"learning_rate": 0.002}})
    write_run(tmp_path, "baseline", 0, line(8.0, 3.0, 2000))
    write_run(tmp_path, "b", 0, line(8.0, 2.9, b_tokens))
    if match:
        _with_budget(
            tmp_path,
            {
                "match": match,
                "baseline_budget": 2000 * (1000 if match == "flops" else 1),
                "rounding": "within half a step",
                "max_steps": {"baseline": 20, "b": 20},
            },
        )
    analysis = analyze(load_study_dir(tmp_path))
    readings = {b: row["reading"] for b, row in analysis.equal_budgets.items()}
    matched = "end of schedule (matched budgets)"
    for budget in ("flops", "tokens"):
        assert readings[budget] == (matched if budget in end_of_schedule else "indicative")
    assert readings["time_s"] == "indicative"

    from lmablate.report.results import key_findings, results_tables
    from lmablate.report.sections import equal_budget_section

    findings = "\n".join(key_findings(analysis, 1))
    tables = "\n".join(results_tables(analysis))
    section = "\n".join(equal_budget_section(analysis))
    if "flops" in end_of_schedule:
        assert (
            "end of schedule (matched budgets): "
            + ("budgets matched on FLOPs" if match == "flops" else "every compared run ends at")
            in findings
        )
        assert "val loss at equal FLOPs (end of schedule)" in tables
        assert "FLOPs; end of schedule (matched budgets))" in section
        assert "tokens; end of schedule (matched budgets))" in section
        assert "mid-schedule, indicative" not in findings + tables + section
    else:
        assert "so indicative" in findings and "(indicative)" in tables
        assert "FLOPs; indicative)" in section and "tokens; indicative)" in section

    from lmablate.report import figures

    caption = figures._equal_budgets(analysis, variant_styles(["baseline", "b"]), tmp_path)[
        "equal_budget_comparison.png"
    ]["description"]
    if end_of_schedule:
        assert "the token and FLOP budgets are read at the end of every schedule" in caption
        assert caption.endswith("the others mid-schedule for the longer runs (indicative)")
    else:
        assert caption.endswith("read mid-schedule for the longer runs, so indicative")


# ---------------------------------------------------------------------------- overfitting


def test_a_generalization_gap_above_the_threshold_is_flagged_while_validation_falls(tmp_path):
    from lmablate.analysis.validity import OVERFIT_GAP

    write_study(tmp_path, {"b": {"learning_rate": 0.002}})
    write_run(tmp_path, "baseline", 0, line(8.0, 3.0, 2000))
    write_run(tmp_path, "b", 0, line(8.0, 3.0, 2000))  # validation falls to the end
    summary_file = tmp_path / "runs/b/seed-0/summary.json"
    summary = json.loads(summary_file.read_text())
    summary["final_train_loss"] = 3.0 - 0.45  # a gap of 0.45 nats
    summary_file.write_text(json.dumps(summary))
    analysis = analyze(load_study_dir(tmp_path))
    [flag] = analysis.overfitting["b"]["flags"]
    assert "generalization gap 0.4500 nats" in flag and f"exceeds {OVERFIT_GAP}" in flag
    assert analysis.overfitting["b"]["gap_threshold"] == OVERFIT_GAP < 0.45
    assert analysis.overfitting["baseline"]["flags"] == []  # a gap of -0.01

    from lmablate.report.sections import validity_section

    text = "\n".join(validity_section(analysis))
    assert f"above **{OVERFIT_GAP} nats per token**" in text


# ---------------------------------------------------------------------------- correlations


def test_correlations_are_over_configurations_not_runs(tmp_path):
    """Three configurations with two seeds each, and a ladder rung of the baseline: the
    correlation has n = 3 configurations, the rung and the seeds are not extra points."""
    from scipy.stats import spearmanr

    write_study(
        tmp_path,
        {"b": {"learning_rate": 0.002}, "c": {"batch_size": 32}, "rung": {"max_steps": 10}},
        seeds=2,
    )
    _with_budget(tmp_path, {"ladder_variants": {"rung": 0.5}})
    ends = {"baseline": (2000, (3.0, 3.1)), "b": (3000, (2.9, 2.95)), "c": (4000, (3.2, 3.3))}
    ends["rung"] = (1000, (3.6, 3.7))
    for variant, (tokens, finals) in ends.items():
        for seed, final in enumerate(finals):
            write_run(tmp_path, variant, seed, line(8.0, final, tokens))
    analysis = analyze(load_study_dir(tmp_path))
    result = analysis.correlations
    assert result["n_configurations"] == 3 and result["n_runs"] == 6
    tokens = [2000, 3000, 4000]
    losses = [3.05, 2.925, 3.25]
    rho = spearmanr(tokens, losses).statistic
    assert result["val_loss_vs_tokens_seen"]["rho"] == pytest.approx(rho)
    assert result["val_loss_vs_tokens_seen"]["n"] == 3


# ------------------------------------------------------------------------- edge of a sweep


def _series(tmp_path, losses: dict[str, tuple[float, float]], extra: dict | None = None):
    """baseline + variants, each changing the learning rate alone: {variant: (lr, final)}."""
    extra = extra or {}
    write_study(
        tmp_path,
        {
            v: {"learning_rate": lr, **extra.get(v, {})}
            for v, (lr, _) in losses.items()
            if v != "baseline"
        },
    )
    for variant, (lr, final) in losses.items():
        write_run(tmp_path, variant, 0, line(8.0, final, 2000), learning_rate=lr)
    return analyze(load_study_dir(tmp_path))


def test_a_monotone_learning_rate_trio_is_flagged_at_its_edge(tmp_path):
    analysis = _series(
        tmp_path,
        {"baseline": (3e-4, 3.2), "low_lr": (1e-4, 3.5), "high_lr": (1e-3, 3.0)},
    )
    [edge] = analysis.sweep_edges
    assert edge["field"] == "learning_rate"
    assert (edge["best"], edge["edge"], edge["baseline_value"]) == ("high_lr", "highest", 3e-4)
    assert [p["variant"] for p in edge["points"]] == ["low_lr", "baseline", "high_lr"]

    from lmablate.report.results import key_findings

    text = "\n".join(key_findings(analysis, 1))
    assert "Edge of a sweep (learning_rate)" in text
    assert "baseline's learning_rate (0.0003) is likely under-tuned" in text
    assert "inherits" in text


def test_a_series_with_its_best_inside_is_not_flagged(tmp_path):
    analysis = _series(
        tmp_path,
        {"baseline": (3e-4, 3.0), "low_lr": (1e-4, 3.5), "high_lr": (1e-3, 3.2)},
    )
    assert analysis.sweep_edges == []


def test_a_variant_changing_two_fields_is_not_part_of_a_series(tmp_path):
    analysis = _series(
        tmp_path,
        {"baseline": (3e-4, 3.2), "low_lr": (1e-4, 3.5), "high_lr": (1e-3, 3.0)},
        extra={"high_lr": {"batch_size": 32}},
    )
    assert analysis.sweep_edges == []  # two points left: no series


def test_the_baseline_at_the_edge_is_named_as_such(tmp_path):
    analysis = _series(
        tmp_path,
        {"baseline": (1e-3, 3.0), "mid_lr": (3e-4, 3.2), "low_lr": (1e-4, 3.5)},
    )
    [edge] = analysis.sweep_edges
    assert edge["best"] == "baseline" and edge["edge"] == "highest"


# ----------------------------------------------------------------------------- late slope


def test_late_slope_of_a_known_line_with_noise():
    rng = random.Random(0)
    # steep early descent (ignored), then 0.5 nats per million tokens over the last fifth
    points = [(t, 9.0 - 4e-6 * t) for t in range(0, 800_000, 20_000)]
    points += [
        (t, 5.8 - 0.5e-6 * (t - 800_000) + rng.gauss(0, 0.002))
        for t in range(800_000, 1_000_001, 5_000)
    ]
    slope = late_slope(points)
    assert slope.n_points == 41 and slope.tokens == 200_000
    assert slope.ci_low < -0.5 < slope.ci_high
    assert slope.slope == pytest.approx(-0.5, abs=0.05)
    assert slope.reading == "still falling"
    assert slope.drop == pytest.approx(0.1, abs=0.01)  # 0.5 per M over 0.2 M tokens


def test_late_slope_reads_a_flat_noisy_tail_as_flat():
    rng = random.Random(1)
    points = [(t, 3.0 + rng.gauss(0, 0.05)) for t in range(0, 1_000_001, 10_000)]
    slope = late_slope(points)
    assert slope.reading == "flat within noise"
    assert slope.ci_low < 0 < slope.ci_high


def test_late_slope_reads_a_rising_tail_and_exact_lines():
    rising = late_slope([(t, 2.0 + 1e-6 * t) for t in range(0, 1_000_001, 50_000)])
    assert rising.reading == "rising" and rising.slope == pytest.approx(1.0)
    assert late_slope([(0, 3.0), (100, 2.0)]).reading == "too few points"
    assert late_slope([(0, 3.0)]) is None


def _slope_study(tmp_path, tails: dict[str, Callable[[int], float]]):
    """One run per variant whose logged training loss follows ``tails`` (tokens -> loss)."""
    write_study(tmp_path, {v: {"learning_rate": 0.002} for v in tails if v != "baseline"})
    for variant, tail in tails.items():
        train = {t: tail(t) for t in range(100, 20_001, 100)}
        write_run(tmp_path, variant, 0, line(8.0, 3.0, 20_000), train=train)
    return analyze(load_study_dir(tmp_path)).per_variant


def test_converged_only_when_the_interval_excludes_a_meaningful_decline(tmp_path):
    """The last fifth spans 3,900 tokens (16,100 to 20,000); CONVERGED_TOLERANCE = 0.01 nats
    over it. "falling" drops 0.04 nats there, "flat" and "creeping" (0.004 nats, a real but
    negligible decline) less than 0.01, "noisy" is flat with an interval too wide to tell."""
    from lmablate.analysis.metrics import CONVERGED_TOLERANCE

    rng = random.Random(3)
    table = _slope_study(
        tmp_path,
        {
            "baseline": lambda t: 3.2 - 1e-5 * t + rng.gauss(0, 0.002),
            "flat": lambda t: 3.0 + rng.gauss(0, 0.0005),
            "creeping": lambda t: 3.0 - 1e-6 * t,
            "noisy": lambda t: 3.0 + rng.gauss(0, 0.05),
        },
    )
    falling = table["baseline"]["late_slope"]
    assert falling["reading"] == "still falling" and falling["drop"] > CONVERGED_TOLERANCE
    assert table["baseline"]["convergence"] == "still falling"
    assert table["baseline"]["converged"] is False
    assert table["flat"]["convergence"] == "converged" and table["flat"]["converged"] is True
    # a decline the interval says is real, but smaller than the tolerance: converged
    creeping = table["creeping"]["late_slope"]
    assert creeping["reading"] == "still falling" and creeping["drop"] < CONVERGED_TOLERANCE
    assert table["creeping"]["converged"] is True
    # flat within noise, but the interval still reaches a decline beyond the tolerance
    assert table["noisy"]["late_slope"]["reading"] == "flat within noise"
    assert table["noisy"]["convergence"] == "undetermined"
    assert table["noisy"]["converged"] is None


# ------------------------------------------------------------------------------ data files


def test_data_files_one_row_per_configuration_and_numeric_seeds(tmp_path):
    write_study(tmp_path, {"b": {"learning_rate": 0.002}}, seeds=2)
    for variant, finals in (("baseline", (3.0, 3.1)), ("b", (2.9, 3.05))):
        for seed, final in enumerate(finals):
            write_run(tmp_path, variant, seed, line(8.0, final, 2000))
    report = build_report(tmp_path)

    with (report / "performance_metrics.csv").open() as f:
        reader = csv.DictReader(f)
        configs = list(reader)
    assert reader.fieldnames[: len(REFERENCE_COLUMNS)] == REFERENCE_COLUMNS
    assert [r["configuration"] for r in configs] == ["baseline", "b"]
    assert float(configs[0]["eval_loss"]) == pytest.approx(3.05)
    with (report / "run_metrics.csv").open() as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 4
    assert [int(r["seed"]) for r in runs] == [0, 1, 0, 1]  # every seed parses as a number
    assert {r["configuration"] for r in runs} == {"baseline", "b"}
    with zipfile.ZipFile(report / "research_package.zip") as zf:
        assert "study.yaml" in zf.namelist()
        assert "run_metrics.csv" in zf.namelist()

    table = (report / "paper" / "results_table.tex").read_text()
    header = next(line for line in table.splitlines() if line.startswith("Configuration"))
    assert "Tokens" in header and "FLOPs" in header and "Verdict" in header
    assert "over 2 seeds" in table and "one seed" not in table
    rows = [line for line in table.splitlines() if line.endswith(r"\\")][1:]
    assert len(rows) == 2
    columns = list(zip(*(row.removesuffix(r" \\").split(" & ") for row in rows), strict=True))
    assert all(set(column) != {"--"} for column in columns)  # no column of nothing

    methods = (report / "paper" / "methods.tex").read_text()
    for fact in (
        "900 training documents (800,000 tokens)",
        "100 validation documents (90,000 tokens)",
        "2 seeds (0, 1)",
        "NVIDIA H100 80GB HBM3 (80 GiB memory), host CPU AMD EPYC 9654",
        "PyTorch 2.13.0 (CUDA 12.8)",
        "bf16 precision",
        "4,096 target tokens",
        "6N + 12",
    ):
        assert fact in methods, fact
    markdown = (report / "research_report.md").read_text()
    assert "## Methods" in markdown and "### Per-configuration settings" in markdown
    data = json.loads((report / "research_data.json").read_text())
    assert "downstream_evaluation" not in data  # empty sections are left out
    assert "tuned_comparison" not in data["statistical_analysis"]
    resolved = data["experimental_setup"]["configurations"]["b"]["resolved"]
    assert resolved["precision"] == "bf16" and resolved["vocab_size"] == 2048


def test_one_seed_results_table_has_no_empty_test_columns(tmp_path):
    write_study(tmp_path, {"b": {"learning_rate": 0.002}})
    for variant, final in (("baseline", 3.0), ("b", 2.9)):
        write_run(tmp_path, variant, 0, line(8.0, final, 2000))
        _with_documents(tmp_path, variant, 0, [30.0 + (final - 3.0) * 10 + i for i in range(9)])
    table = (build_report(tmp_path) / "paper" / "results_table.tex").read_text()
    header = next(line for line in table.splitlines() if line.startswith("Configuration"))
    assert "p_{" not in header and "Verdict" not in header  # no tests with one seed
    assert "one seed" in table and "bootstrap interval over validation documents" in table
    assert "$-0.100$ [$-0.100$, $-0.100$]" in table  # every document 1 nat lower over 10 targets


# ------------------------------------------------------------- bootstrap over documents


def test_document_bootstrap_covers_a_known_difference_at_its_stated_rate():
    """Documents of random length drawn from a population whose per-target difference is
    known: the 95% interval covers it in about 95% of simulated studies."""
    import numpy as np

    from lmablate.analysis.stats import document_bootstrap

    rng = np.random.default_rng(1)
    true_difference, covered, trials = -0.05, 0, 400
    for trial in range(trials):
        targets = rng.integers(20, 400, size=150)
        baseline = targets * 3.0 + rng.normal(0, 1.0, 150) * np.sqrt(targets) * 2
        # a document-level effect (some documents gain more) plus per-target noise
        effect = true_difference + rng.normal(0, 0.08, 150)
        variant = baseline + targets * effect + rng.normal(0, 0.5, 150) * np.sqrt(targets)
        interval = document_bootstrap(
            variant.tolist(), baseline.tolist(), targets.tolist(), resamples=1000, rng_seed=trial
        )
        covered += interval.ci_low <= true_difference <= interval.ci_high
    # 400 trials: the rate's standard error is 0.011, so this is 0.95 within ±2.7 of them
    assert 0.92 <= covered / trials <= 0.98


def test_document_bootstrap_by_hand():
    from lmablate.analysis.stats import document_bootstrap

    interval = document_bootstrap([12.0, 5.0, 9.0], [10.0, 6.0, 9.0], [4, 2, 4])
    assert interval.difference == pytest.approx(1.0 / 10)  # (2 - 1 + 0) / 10 targets
    assert interval.ci_low <= interval.difference <= interval.ci_high
    assert (interval.documents, interval.targets) == (3, 10)
    assert document_bootstrap([1.0], [2.0], [3]) is None  # one document: nothing to resample


def _with_documents(root: Path, variant: str, seed: int, nats: list[float], digest="abc"):
    (root / "runs" / variant / f"seed-{seed}" / "eval_documents.json").write_text(
        json.dumps(
            {
                "step": 20,
                "targets_digest": digest,
                "columns": ["targets", "nats"],
                "documents": [[10, x] for x in nats],
            }
        )
    )


def test_one_seed_study_reports_document_intervals(tmp_path):
    write_study(tmp_path, {"better": {"learning_rate": 0.002}, "other": {"batch_size": 4}})
    rng = random.Random(0)
    base = [30.0 + rng.gauss(0, 3) for _ in range(40)]
    for variant, shift in (("baseline", 0.0), ("better", -2.0), ("other", 0.0)):
        write_run(tmp_path, variant, 0, line(8.0, 3.0 + shift / 10, 2000))
        noise = [rng.gauss(0, 0.3) for _ in base] if variant != "baseline" else [0.0] * 40
        _with_documents(
            tmp_path,
            variant,
            0,
            [b + shift + e for b, e in zip(base, noise, strict=True)],
            digest="other" if variant == "other" else "abc",
        )
    analysis = analyze(load_study_dir(tmp_path))
    better = analysis.document_intervals["better"]
    assert better["difference"] == pytest.approx(-0.2, abs=0.02)  # -2 nats over 10 targets
    assert better["ci_high"] < 0 and better["seeds"] == 1
    assert "different targets" in analysis.document_intervals["other"]["note"]

    from lmablate.report.sections import statistics_section

    text = "\n".join(statistics_section(analysis, 1))
    assert "paired bootstrap interval over documents" in text
    assert "not seed variance" in text
    assert "| better |" in text and "lower" in text
    assert "n/a | n/a" not in text  # no rows of empty test columns with one seed


# ---------------------------------------------------------------------------------- figures


def _pdf_size_and_fonts(path: Path) -> tuple[tuple[float, float], set[float]]:
    """The page size in inches and every font size (points) that the PDF's text uses."""
    import re
    import zlib

    data = path.read_bytes()
    box = re.search(rb"/MediaBox \[\s*([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)\s*\]", data)
    width, height = (float(box.group(3)) / 72, float(box.group(4)) / 72)
    sizes = set()
    for stream in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            content = zlib.decompress(stream.group(1))
        except zlib.error:
            continue
        sizes |= {float(x) for x in re.findall(rb"/F\d+ ([\d.]+) Tf", content)}
    return (width, height), sizes


def test_every_figure_is_paper_sized_readable_and_plots_each_series_once(tmp_path):
    """Two seeds, a learning-rate sweep (so the sensitivity and schedule figures exist too) and
    a configuration with twice the tokens per step."""
    lrs = {"lr=0.001": 0.001, "lr=0.003": 0.003}
    write_study(tmp_path, {**{n: {"learning_rate": lr} for n, lr in lrs.items()}}, seeds=2)
    study = yaml.safe_load((tmp_path / "study.yaml").read_text())
    study["sweeps"] = [
        {"fields": {"learning_rate": [0.001, 0.003]}, "variants": {"baseline": list(lrs)}}
    ]
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    finals = {"baseline": (3.0, 3.1), "lr=0.001": (2.9, 3.0), "lr=0.003": (3.3, 3.2)}
    for variant, values in finals.items():
        for seed, final in enumerate(values):
            lr = lrs.get(variant, 3e-4)
            write_run(tmp_path, variant, seed, line(8.0, final, 2000), learning_rate=lr)
    with warnings.catch_warnings():  # no "No artists with labels", no layout warnings
        warnings.simplefilter("error")
        report = build_report(tmp_path)
    figures = json.loads((report / "research_data.json").read_text())["visualizations"]
    assert {"lr_sensitivity.png", "learning_rate_schedules.png"} <= set(figures)

    import matplotlib.image

    seen: dict[tuple, str] = {}
    for name, figure in figures.items():
        (width, height), fonts = _pdf_size_and_fonts(report / "paper" / name.replace("png", "pdf"))
        assert min(abs(width - 3.3), abs(width - 6.8)) < 0.01, (name, width)
        assert (width, height) == pytest.approx(figure["size_in"], abs=0.01)
        assert fonts and min(fonts) >= 7, (name, sorted(fonts))
        pixels = matplotlib.image.imread(report / name).shape
        assert pixels[1] == pytest.approx(width * 200, abs=1), name  # the PNG: same size
        for panel in figure["panels"]:
            for series in panel["series"]:
                key = (panel["x"], panel["y"], series)
                assert key not in seen, f"{key} drawn in {seen.get(key)} and {name}"
                seen[key] = name
            if "loss" in panel["y"] and "change" not in panel["y"] and "excess" not in panel["y"]:
                assert panel["y_range"][0] > 0, (name, panel)  # loss axes need not start at 0


def test_nine_schedules_are_nine_distinct_curves_and_one_tokenizer_shows_the_gap(
    tmp_path, monkeypatch
):
    """Past eight configurations colours repeat, so each schedule curve takes its own colour
    and line style; with one tokenizer bpb is the loss rescaled, so the final-performance
    figure's panel (b) shows the generalization gap instead."""
    from matplotlib import pyplot as plt

    from lmablate.report import design_figures, figures

    variants = {f"w{k}": {"warmup_steps": k + 3} for k in range(8)}
    write_study(tmp_path, variants)
    write_run(tmp_path, "baseline", 0, line(8.0, 3.0, 2000))
    for k, name in enumerate(variants):
        write_run(tmp_path, name, 0, line(8.0, 3.0 + 0.01 * k, 2000), warmup_steps=k + 3)
    drawn = []
    real_finish = figures.finish

    def keep(fig, path, description):
        drawn.append(
            (path.name, [(ln.get_color(), ln.get_linestyle()) for ln in fig.axes[0].lines])
        )
        return real_finish(fig, path, description)

    monkeypatch.setattr(figures, "finish", keep)
    monkeypatch.setattr(design_figures, "finish", keep)
    report = build_report(tmp_path)
    plt.close("all")
    styles = dict(drawn)["learning_rate_schedules.png"]
    assert len(styles) == 9 and len(set(styles)) == 9, styles
    final = json.loads((report / "research_data.json").read_text())["visualizations"][
        "final_performance_comparison.png"
    ]
    assert "the generalization gap" in final["description"]
    assert final["panels"][1]["y"] == "nats/token"
    assert "overfitting threshold (0.1 nats)" in final["panels"][1]["series"]


def test_a_study_whose_baseline_failed_still_gets_its_package(tmp_path):
    """A failed run's summary holds no numbers: the methods say what they can, nothing
    crashes, and a malformed eval_documents.json is left out rather than read."""
    write_study(tmp_path, {"b": {"learning_rate": 0.002}, "c": {"learning_rate": 0.003}})
    failed = tmp_path / "runs" / "baseline" / "seed-0"
    failed.mkdir(parents=True)
    (failed / "config.json").write_text(json.dumps(RunConfig().model_dump(mode="json")))
    (failed / "summary.json").write_text(json.dumps({"status": "failed", "message": "OOM"}))
    write_run(tmp_path, "b", 0, line(8.0, 3.0, 2000))
    write_run(tmp_path, "c", 0, line(8.0, 3.2, 2000))
    (tmp_path / "runs/c/seed-0/eval_documents.json").write_text(json.dumps({"step": 5}))
    report = build_report(tmp_path)
    markdown = (report / "research_report.md").read_text()
    assert "No baseline run completed" in markdown
    assert "| baseline | 0 | failed | OOM |" in markdown
    assert "No baseline run completed" in (report / "paper" / "methods.tex").read_text()


def test_a_refused_launched_run_keeps_its_own_reason(tmp_path):
    """A training process refused at start-up (exit 2) under --parallel or Ray: its summary
    quotes the refusal from train.log, not a guess about the OOM killer."""
    from lmablate.study.pools import ended

    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").write_text(
        "reusing token cache /x\nerror: failed before training: needs at least 9.0 GiB\n"
    )
    end = ended("run", run, 2)
    assert (end.status, end.message) == ("failed", "failed before training: needs at least 9.0 GiB")
    assert json.loads((run / "summary.json").read_text())["message"] == end.message
    other = tmp_path / "other"
    other.mkdir()
    assert "killed, or out of host memory" in ended("other", other, 1).message
