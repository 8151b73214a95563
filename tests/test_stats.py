"""Statistics and validity checks, against scipy and hand-computed values."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from scipy import stats as scipy_stats

from lmablate.analysis.findings import analyze
from lmablate.analysis.rundata import load_study_dir, loss_at
from lmablate.analysis.stats import compare, holm, noise_floor, summarize, with_verdicts

T_975_DF2 = 4.302652729911275  # t(0.975) with 2 degrees of freedom, from tables
T_975_DF3 = 3.182446305284263


def test_summary_interval_matches_scipy_and_the_table():
    values = [5.0, 5.2, 5.1, 4.9]
    summary = summarize(values)
    mean = 5.05
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    assert summary.mean == pytest.approx(mean) and summary.std == pytest.approx(sd)
    half = T_975_DF3 * sd / 2
    assert (summary.ci_low, summary.ci_high) == pytest.approx((mean - half, mean + half))
    low, high = scipy_stats.t.interval(0.95, 3, loc=mean, scale=scipy_stats.sem(values))
    assert (summary.ci_low, summary.ci_high) == pytest.approx((low, high))
    single = summarize([4.2])
    assert single.mean == 4.2 and single.ci_low is None and single.std is None
    assert summarize([]) is None


def test_paired_comparison_by_hand():
    baseline = {0: 5.00, 1: 5.10, 2: 5.20}
    variant = {0: 4.80, 1: 4.95, 2: 5.00}
    c = compare("v", variant, baseline)
    diffs = [-0.20, -0.15, -0.20]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    t = mean / (sd / math.sqrt(3))
    assert c.test == "paired t" and c.df == 2
    assert c.difference == pytest.approx(mean)
    assert c.statistic == pytest.approx(t)
    assert c.p_value == pytest.approx(2 * scipy_stats.t.sf(abs(t), 2))
    assert c.p_value == pytest.approx(
        scipy_stats.ttest_rel([4.80, 4.95, 5.00], [5.00, 5.10, 5.20]).pvalue
    )
    half = T_975_DF2 * sd / math.sqrt(3)
    assert (c.ci_low, c.ci_high) == pytest.approx((mean - half, mean + half))
    assert c.effect_size == pytest.approx(mean / sd)  # Cohen's d_z


def test_unpaired_seeds_use_welch():
    baseline = {0: 5.0, 1: 5.1, 2: 5.2, 3: 5.05}
    variant = {7: 4.7, 8: 4.9, 9: 4.75}
    c = compare("v", variant, baseline)
    b, v = list(baseline.values()), list(variant.values())
    welch = scipy_stats.ttest_ind(v, b, equal_var=False)
    assert c.test == "Welch t"
    assert c.statistic == pytest.approx(welch.statistic)
    assert c.p_value == pytest.approx(welch.pvalue)
    var_v, var_b = scipy_stats.tvar(v), scipy_stats.tvar(b)
    se2 = var_v / 3 + var_b / 4
    df = se2**2 / ((var_v / 3) ** 2 / 2 + (var_b / 4) ** 2 / 3)  # Welch–Satterthwaite
    assert c.df == pytest.approx(df)
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(se2)
    assert c.ci_high - c.ci_low == pytest.approx(2 * half)


def test_one_seed_is_untested():
    c = compare("v", {0: 4.0}, {0: 5.0})
    assert c.verdict == "untested" and c.p_value is None and c.difference == -1.0
    assert noise_floor([5.0]) is None


def test_holm_by_hand():
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_noise_floor_by_hand():
    baseline = [3.00, 3.02, 2.98]
    sd = 0.02
    assert noise_floor(baseline) == pytest.approx(T_975_DF2 * sd * math.sqrt(2 / 3))


def test_verdicts():
    baseline = {0: 3.00, 1: 3.02, 2: 2.98}
    floor = noise_floor(list(baseline.values()))  # ≈ 0.0703
    better = compare("better", {0: 2.70, 1: 2.71, 2: 2.69}, baseline)
    close = compare("close", {0: 2.97, 1: 3.00, 2: 2.95}, baseline)  # -0.027: within noise
    constant = compare("constant", {0: 2.97, 1: 2.99, 2: 2.95}, baseline)  # -0.03 every seed
    noisy = compare("noisy", {0: 2.70, 1: 3.30, 2: 2.60}, baseline)  # big spread
    worse = compare("worse", {0: 3.40, 1: 3.41, 2: 3.39}, baseline)
    verdicts = {c.variant: c for c in with_verdicts([better, close, noisy, worse, constant], floor)}
    assert verdicts["better"].verdict == "better"
    assert verdicts["worse"].verdict == "worse"
    assert verdicts["close"].verdict == "within noise"
    assert verdicts["noisy"].verdict == "no detectable difference"
    # identical differences on every seed (up to rounding): no variance to test against
    assert constant.p_value is None and verdicts["constant"].verdict == "untested"
    raw = [better.p_value, close.p_value, noisy.p_value, worse.p_value]
    names = ("better", "close", "noisy", "worse")
    assert [verdicts[n].p_holm for n in names] == pytest.approx(holm(raw))


def test_mismatched_seed_sets_pair_on_the_shared_seeds():
    baseline = {0: 3.00, 1: 3.10, 2: 3.20}
    c = compare("v", {0: 2.90, 1: 3.05}, baseline)
    assert c.test == "paired t" and c.n_variant == c.n_baseline == 2
    assert c.difference == pytest.approx(((2.90 - 3.00) + (3.05 - 3.10)) / 2)
    assert c.p_value == pytest.approx(scipy_stats.ttest_rel([2.90, 3.05], [3.00, 3.10]).pvalue)


def test_interpolated_loss_at_budget():
    curve = [
        {"tokens": 0, "score": 8.0},
        {"tokens": 100, "score": 6.0},
        {"tokens": 300, "score": 5.0},
    ]
    assert loss_at(curve, "tokens", 50) == pytest.approx(7.0)
    assert loss_at(curve, "tokens", 200) == pytest.approx(5.5)
    assert loss_at(curve, "tokens", 300) == pytest.approx(5.0)
    assert loss_at(curve, "tokens", 301) is None


# ------------------------------------------------------------------ synthetic study directories


def synthetic_study(
    root: Path,
    finals: dict[str, list[float]],
    tokens_per_step: dict[str, int],
    changes: dict[str, dict],
) -> Path:
    """Run directories whose validation loss falls linearly to a known final value."""
    seeds = list(range(len(finals["baseline"])))
    (root / "study.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "synthetic",
                "seeds": seeds,
                "data": {"source": "builtin"},
                "baseline": {"model": {}, "train": {}},
                "variants": {v: changes.get(v, {}) for v in finals if v != "baseline"},
            }
        )
    )
    for variant, values in finals.items():
        for seed, final in zip(seeds, values, strict=True):
            run = root / "runs" / variant / f"seed-{seed}"
            run.mkdir(parents=True)
            step_tokens = tokens_per_step.get(variant, 100)
            records = []
            for step in (0, 10, 20):
                loss = 8.0 - (8.0 - final) * step / 20
                if step:
                    records.append(
                        {
                            "kind": "train",
                            "step": step,
                            "loss": loss + 0.01,
                            "step_time": 0.1,
                            "tokens_seen": step * step_tokens,
                        }
                    )
                records.append(
                    {
                        "kind": "eval",
                        "step": step,
                        "val_loss": loss,
                        "val_bpb": loss / 3,
                        "val_accuracy": 0.1,
                        "val_ppl": math.exp(loss),
                        "tokens_seen": step * step_tokens,
                    }
                )
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            (run / "config.json").write_text(
                json.dumps({"train": {"max_steps": 20, "data_seed": seed}})
            )
            (run / "summary.json").write_text(
                json.dumps(
                    {
                        "status": "complete",
                        "step": 20,
                        "final_val_loss": final,
                        "final_val_bpb": final / 3,
                        "final_val_accuracy": 0.1,
                        "final_train_loss": final + 0.01,
                        "tokens_seen": 20 * step_tokens,
                        "flops_per_token": 1000,
                        "total_flops": 20 * step_tokens * 1000,
                        "epochs": 1.0,
                        "params": {"total": 10, "non_embedding": 5},
                        "data": {
                            "documents": {"train": 9, "val": 1},
                            "tokens": {},
                            "leakage": {
                                "method": "sha",
                                "val_documents_in_training": 0,
                                "duplicates_removed": 2,
                            },
                        },
                    }
                )
            )
    return root


def test_analysis_of_known_distributions(tmp_path):
    finals = {
        "baseline": [3.00, 3.02, 2.98],
        "better": [2.70, 2.71, 2.69],
        "close": [2.67, 2.70, 2.68],  # within the noise floor of "better"
        "worse": [3.40, 3.41, 3.39],
    }
    study = synthetic_study(
        tmp_path, finals, {"worse": 200}, {"worse": {"batch_size": 16, "learning_rate": 1e-3}}
    )
    analysis = analyze(load_study_dir(study))

    floor = T_975_DF2 * 0.02 * math.sqrt(2 / 3)
    assert analysis.noise_floor == pytest.approx(floor)
    interval = analysis.intervals["better"]["eval_loss"]
    low, high = scipy_stats.t.interval(0.95, 2, loc=2.70, scale=scipy_stats.sem(finals["better"]))
    assert (interval["ci_low"], interval["ci_high"]) == pytest.approx((low, high))

    comparisons = {c.variant: c for c in analysis.comparisons}
    raw = {
        v: scipy_stats.ttest_rel(finals[v], finals["baseline"]).pvalue
        for v in ("better", "close", "worse")
    }
    adjusted = dict(zip(raw, holm(list(raw.values())), strict=True))
    for variant in raw:
        assert comparisons[variant].test == "paired t"
        assert comparisons[variant].p_value == pytest.approx(raw[variant])
        assert comparisons[variant].p_holm == pytest.approx(adjusted[variant])
    assert {v: c.verdict for v, c in comparisons.items()} == {
        "better": "better",
        "close": "better",
        "worse": "worse",
    }

    findings = analysis.findings
    assert findings["best_performing_config"] == "tied: close, better"
    assert findings["lowest_mean_val_loss_config"] == "close"
    assert findings["worst_performing_config"] == "worse"

    # "worse" sees twice the tokens per step: at equal tokens it is read at 2,000 tokens (step
    # 10 of its curve), halfway down its line: 8 - (8 - 3.4) / 2 = 5.7
    budgets = analysis.equal_budgets["tokens"]
    assert budgets["matched_budget"] == 2000
    assert budgets["val_loss"]["worse"] == pytest.approx(5.7)
    assert budgets["val_loss"]["baseline"] == pytest.approx(3.0)

    confound = analysis.confounds["worse"]
    assert confound["multi_factor"] and confound["factors"] == [
        "batch size",
        "learning rate",
    ]
    assert confound["tokens_ratio"] == pytest.approx(2.0)
    assert any("2.00x the baseline's tokens" in w for w in confound["warnings"])
    # each flagged confound names the study-design option that removes it
    assert any("tune: {learning_rate: [...]}" in w for w in confound["warnings"])
    assert any("budget: {match: tokens}" in w for w in confound["warnings"])
    assert any("budget: {match: flops}" in w for w in confound["warnings"])
    assert analysis.confounds["better"]["warnings"] == []
    assert analysis.leakage["val_documents_in_training"] == 0
    assert analysis.leakage["duplicates_removed"] == 2


def test_target_is_read_off_seed_mean_curves(tmp_path):
    """The baseline's own mean final loss is reached by its mean curve, even though a seed that
    finishes above the mean never reaches it alone."""
    finals = {"baseline": [3.0, 3.1, 3.2], "a": [2.95, 3.05, 3.22]}
    analysis = analyze(load_study_dir(synthetic_study(tmp_path, finals, {}, {})))
    assert analysis.target_loss == pytest.approx(3.1)
    table = analysis.per_variant
    # seed-mean curves fall linearly from 8.0 to their mean final loss over 2,000 tokens
    assert table["baseline"]["tokens_to_target"] == pytest.approx(2000)
    mean_final = (2.95 + 3.05 + 3.22) / 3
    halfway = (8.0 + mean_final) / 2  # the mean curve at 1,000 tokens
    # interpolated linearly in log tokens between the evaluations at 1,000 and 2,000 tokens
    expected = 1000 * 2 ** ((halfway - 3.1) / (halfway - mean_final))
    assert table["a"]["tokens_to_target"] == pytest.approx(expected)
    assert analysis.findings["lowest_flops_to_target_config"] == "a"
    # the baseline's seed that ends at 3.2 never reaches 3.1 alone: no margin to test, so
    # no "most efficient" finding
    assert analysis.findings["efficiency_margin"]["verdict"] == "untested"
    assert analysis.findings["most_efficient_config"] is None
    assert analysis.findings["not_reaching_target"] == []


def test_overfitting_is_flagged(tmp_path):
    study = synthetic_study(tmp_path, {"baseline": [3.0, 3.0], "over": [3.5, 3.5]}, {}, {})
    metrics = study / "runs/over/seed-1/metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    for r in records:  # validation rises from step 10 to 20 while training keeps falling
        if r["kind"] == "eval" and r["step"] == 10:
            r["val_loss"] = 3.2
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    flags = analyze(load_study_dir(study)).overfitting["over"]["flags"]
    assert flags == [
        "seed 1: validation loss rose from 3.2000 (step 10) to 3.5000 (step 20) "
        "while training loss fell"
    ]
    assert analyze(load_study_dir(study)).overfitting["baseline"]["flags"] == []


def test_a_damaged_study_directory_reports_the_damage_and_reads_the_rest(tmp_path):
    from lmablate.errors import LmablateError

    finals = {"baseline": [3.0, 3.1], "better": [2.7, 2.8]}
    study_dir = synthetic_study(tmp_path, finals, {}, {})
    (study_dir / "runs/better/seed-1/summary.json").write_text('{"status": "compl')
    with pytest.warns(UserWarning, match=r"better/seed-1/summary.json: damaged, read as missing"):
        study = load_study_dir(study_dir)
    analysis = analyze(study)
    assert analysis.per_variant["better"]["n_complete"] == 1  # the other seed still counts
    for text in ("", "name: [unclosed", "just a string"):
        (study_dir / "study.yaml").write_text(text)
        with pytest.raises(LmablateError, match=r"study.yaml is damaged"):
            load_study_dir(study_dir)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("final_val_loss", "NaN", "final_val_loss: expected a number (got 'NaN')"),
        ("final_val_loss", None, "final_val_loss must be a finite number"),
        ("tokens_seen", True, "tokens_seen: expected an integer (got True)"),
        ("status", "done", "status: Input should be 'complete', 'diverged' or 'failed'"),
        ("params", [1, 2], "params: expected a mapping"),
    ],
)
def test_a_summary_of_the_wrong_types_reads_as_missing(tmp_path, field, value, named):
    study_dir = synthetic_study(tmp_path, {"baseline": [3.0, 3.1], "better": [2.7, 2.8]}, {}, {})
    path = study_dir / "runs/better/seed-1/summary.json"
    summary = json.loads(path.read_text())
    path.write_text(json.dumps({**summary, field: value}))
    with pytest.warns(UserWarning, match=re.escape(named)):
        study = load_study_dir(study_dir)
    run = next(r for r in study.runs if r.variant == "better" and r.seed == 1)
    assert run.summary is None and run.status == "damaged" and named in run.damaged[0]
    assert analyze(study).per_variant["better"]["n_complete"] == 1  # the other seed still counts


def test_a_metrics_record_of_the_wrong_types_is_skipped(tmp_path):
    study_dir = synthetic_study(tmp_path, {"baseline": [3.0, 3.1], "better": [2.7, 2.8]}, {}, {})
    path = study_dir / "runs/better/seed-1/metrics.jsonl"
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    lines[1] = json.dumps({**record, "val_loss" if record["kind"] == "eval" else "loss": "NaN"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"metrics.jsonl:2: record skipped \((val_)?loss: "):
        study = load_study_dir(study_dir)
    run = next(r for r in study.runs if r.variant == "better" and r.seed == 1)
    assert len(run.records) == len(lines) - 1
    analyze(study)  # the rest of the log still reads


def test_a_resumed_run_keeps_its_own_records_whatever_their_types(tmp_path):
    from lmablate.analysis.rundata import read_jsonl

    path = tmp_path / "metrics.jsonl"
    records = [
        {"kind": "train", "step": 2, "loss": "NaN", "tokens_seen": 8, "step_time": 0.1},
        {"kind": ["eval"], "step": 3},
        {"kind": "eval", "step": "4"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.warns(UserWarning, match=r"metrics.jsonl:1: record skipped \(loss: expected"):
        assert read_jsonl(path) == [records[1]]  # a kind of its own is not ours to check
    assert read_jsonl(path, check=False) == records[:2]  # what truncate_jsonl rewrites
