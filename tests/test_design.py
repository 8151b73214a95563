"""Study design: sweeps expand into ordinary, validated, named variants; matched budgets end
every schedule at the baseline's budget; the budget ladder gives compute multipliers; tuning
compares every configuration at its best value, chosen on validation, reported on test."""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from helpers import write_yaml

from lmablate.analysis.scaling import compute_multipliers, fit_power_law
from lmablate.analysis.tuning import lr_sensitivity, tuned_comparison
from lmablate.config.study import Spaced, build_study, format_value, load_study
from lmablate.errors import ConfigError
from lmablate.model.counts import training_flops_per_token
from lmablate.report.format import plain
from lmablate.report.latex import multiplier_table
from lmablate.study.budgets import match_budgets
from lmablate.study.runner import run_study

BASE = {
    "name": "design",
    "seeds": [0, 1],
    "data": {"source": "builtin"},
    "baseline": {
        "model": {"d_model": 32, "n_heads": 2, "n_layers": 2, "d_ff": 64},
        "train": {"learning_rate": 1.0e-3, "max_steps": 20, "warmup_steps": 2},
    },
}


def study(**extra):
    return build_study({**BASE, **extra})


def changes(s) -> dict[str, dict]:
    return {run.variant: run.changes for run in s.runs if run.seed == 0}


def test_logspace_and_linspace_values():
    assert Spaced(logspace=(1e-4, 1e-2), num=5).values() == [1e-4, 3.162e-4, 1e-3, 3.162e-3, 1e-2]
    assert Spaced(linspace=(0.0, 1.0), num=3).values() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="exactly one"):
        Spaced(num=3)
    with pytest.raises(ValueError, match="positive ends"):
        Spaced(logspace=(0.0, 1.0), num=3)


def test_a_one_field_sweep_over_the_baseline():
    s = study(sweeps=[{"grid": {"learning_rate": [3.0e-4, 1.0e-3, 3.0e-3]}}])
    # 1e-3 is the baseline itself: one run, not two
    assert changes(s) == {
        "baseline": {},
        "learning_rate=0.0003": {"learning_rate": 3.0e-4},
        "learning_rate=0.003": {"learning_rate": 3.0e-3},
    }
    assert len(s.runs) == 3 * 2  # every variant on every seed
    assert s.sweeps == [
        {
            "kind": "grid",
            "fields": {"learning_rate": [3.0e-4, 1.0e-3, 3.0e-3]},
            "variants": {"baseline": ["learning_rate=0.0003", "baseline", "learning_rate=0.003"]},
        }
    ]


def test_grid_takes_every_combination_and_zip_pairs_positions():
    grid = study(sweeps=[{"grid": {"d_model": [64, 128], "n_layers": [1, 4]}}])
    assert list(changes(grid))[1:] == [
        "d_model=64,n_layers=1",
        "d_model=64,n_layers=4",
        "d_model=128,n_layers=1",
        "d_model=128,n_layers=4",
    ]
    zipped = study(sweeps=[{"zip": {"d_model": [64, 128], "n_heads": [4, 8]}}])
    assert changes(zipped) == {
        "baseline": {},
        "d_model=64,n_heads=4": {"d_model": 64, "n_heads": 4},
        "d_model=128,n_heads=8": {"d_model": 128, "n_heads": 8},
    }


def test_a_sweep_over_a_variant_keeps_the_variant_changes():
    s = study(
        variants={"lion": {"optimizer": "lion", "weight_decay": 0.3}},
        sweeps=[
            {
                "grid": {"learning_rate": {"logspace": [1.0e-4, 1.0e-2], "num": 3}},
                "over": ["baseline", "lion"],
            }
        ],
    )
    got = changes(s)
    assert got["lion,learning_rate=0.01"] == {
        "learning_rate": 0.01,
        "optimizer": "lion",
        "weight_decay": 0.3,
    }
    assert list(got) == [
        "baseline",
        "lion",
        "learning_rate=0.0001",
        "learning_rate=0.01",
        "lion,learning_rate=0.0001",
        "lion,learning_rate=0.01",
    ]
    # the recorded study lists the generated variants as ordinary ones, with their sweep
    resolved = yaml.safe_load(yaml.safe_dump(s.resolved()))
    assert "lion,learning_rate=0.01" in resolved["variants"]
    assert resolved["sweeps"][0]["variants"]["lion"] == [
        "lion,learning_rate=0.0001",
        "lion",
        "lion,learning_rate=0.01",
    ]


def test_names_are_short_and_deterministic():
    assert [format_value(v) for v in (3e-4, 0.1, 1e-5, 256, True, "relu2")] == [
        "0.0003",
        "0.1",
        "1e-05",
        "256",
        "true",
        "relu2",
    ]


@pytest.mark.parametrize(
    ("sweeps", "message"),
    [
        (
            [{"grid": {"d_model": [48, 50], "n_heads": [3, 4]}}],
            r"sweeps\[0\] \(grid\) at d_model=50, n_heads=3: model\.d_model \(50\) must be "
            r"divisible by model\.n_heads \(3\)",
        ),
        (
            [{"grid": {"lerning_rate": [1.0e-3]}}],
            r"sweeps\[0\]\.grid\.lerning_rate: unknown key; did you mean 'learning_rate'",
        ),
        ([{"grid": {"d_model": [64]}, "over": ["bsaeline"]}], r"no configuration 'bsaeline'"),
        ([{"zip": {"d_model": [64, 128], "n_heads": [4]}}], r"zip needs value lists of one"),
        ([{"grid": {"d_model": [64]}, "zip": {"n_heads": [4]}}], r"exactly one of grid"),
        ([{"grid": {"mlp": ["a/b"]}}], r"would not be a safe directory name"),
        ([{"grid": {"seed": [1, 2]}}], r"set per replicate by the study's seeds"),
        (
            [{"grid": {"d_model": [64]}}, {"zip": {"d_model": [64]}}],
            r"sweeps\[1\] \(zip\) at d_model=64: variant 'd_model=64' is already defined "
            r"\(sweeps\[0\] \(grid\) at d_model=64\)",
        ),
    ],
)
def test_bad_sweeps_name_the_sweep_and_the_values(sweeps, message):
    with pytest.raises(ConfigError, match=message):
        study(sweeps=sweeps)


# ---------------------------------------------------------------------------- matched budgets

MATCHED = {
    **BASE,
    "budget": {"match": "tokens"},
    "baseline": {
        "model": {"d_model": 32, "n_heads": 2, "n_layers": 2, "d_ff": 64},
        "train": {"batch_size": 4, "seq_len": 16, "max_steps": 30, "warmup_fraction": 0.1},
    },
}


def matched(unit="tokens", vocab=512, **variants):
    return match_budgets(
        build_study({**MATCHED, "budget": {"match": unit}, "variants": variants}), vocab
    )


def steps_of(s) -> dict[str, tuple[int, int]]:
    return {
        r.variant: (r.config.train.max_steps, r.config.train.warmup_steps)
        for r in s.runs
        if r.seed == 0
    }


def test_matched_tokens_end_every_schedule_at_the_baseline_budget():
    s = matched(big={"batch_size": 12}, odd={"batch_size": 7}, short={"seq_len": 8})
    # the baseline: 30 steps x 4 x 16 = 1,920 tokens; warmup a tenth of each run
    assert steps_of(s) == {
        "baseline": (30, 3),
        "big": (10, 1),  # 1920 / 48
        "odd": (17, 2),  # 1920 / 112 = 17.14, rounded
        "short": (60, 6),  # 1920 / 32
    }
    assert s.budget == {
        "match": "tokens",
        "baseline_budget": 1920,
        "rounding": "max_steps = round(baseline budget / budget per step): within half a step",
        "max_steps": {"baseline": 30, "big": 10, "odd": 17, "short": 60},
    }
    odd = next(r for r in s.runs if r.variant == "odd")
    assert odd.changes == {"batch_size": 7, "max_steps": 17, "warmup_steps": 2}
    assert abs(17 * 7 * 16 - 1920) <= 7 * 16 / 2  # within half a step


def test_matched_flops_use_each_configuration_flops_per_token():
    s = matched("flops", vocab=500, wide={"d_model": 64, "n_heads": 4})
    base_cfg = next(r.config for r in s.runs if r.variant == "baseline")
    wide_cfg = next(r.config for r in s.runs if r.variant == "wide")
    # the vocabulary padded to a multiple of 64, as the model builds it
    per_token = {
        name: training_flops_per_token(cfg.model, 512, 16)
        for name, cfg in (("baseline", base_cfg), ("wide", wide_cfg))
    }
    expected = round(30 * per_token["baseline"] / per_token["wide"])
    assert wide_cfg.train.max_steps == expected < 30


def test_warmup_in_steps_stays_in_steps():
    s = match_budgets(
        build_study(
            {
                **MATCHED,
                "baseline": {
                    **MATCHED["baseline"],
                    "train": {"max_steps": 30, "batch_size": 4, "seq_len": 16, "warmup_steps": 3},
                },
                "variants": {"short": {"seq_len": 8}},
            }
        ),
        512,
    )
    assert steps_of(s)["short"] == (60, 3)


def test_matched_budgets_refuse_what_cannot_be_matched():
    with pytest.raises(ConfigError, match=r"but fixed set\(s\) max_steps too"):
        matched(fixed={"max_steps": 10})
    too_short = {
        **MATCHED,
        "baseline": {
            **MATCHED["baseline"],
            "train": {"max_steps": 30, "batch_size": 4, "seq_len": 16, "warmup_steps": 12},
        },
        "variants": {"huge": {"batch_size": 12}},
    }
    with pytest.raises(
        ConfigError,
        match=r"variant 'huge' would train 10 steps .*warmup_steps \(12\) must be smaller",
    ):
        match_budgets(build_study(too_short), 512)


def test_unmatched_studies_are_left_alone():
    s = build_study({**BASE, "variants": {"big": {"batch_size": 12}}})
    assert match_budgets(s, 512) is s


def test_a_matched_study_reports_end_of_schedule_numbers(tmp_path, corpus, tokenizer_dir):
    path = write_yaml(
        tmp_path / "study.yaml",
        f"""\
        name: matched
        seeds: [0]
        budget: {{match: tokens}}
        data: {{source: local, path: {corpus}, tokenizer: {tokenizer_dir}, num_documents: null}}
        baseline:
          model: {{d_model: 32, n_heads: 2, n_layers: 1, d_ff: 64}}
          train: {{batch_size: 4, seq_len: 16, max_steps: 12, warmup_fraction: 0.25,
                  eval_every: 4, eval_tokens: 256, log_every: 2}}
        samples: {{prompts: [The], max_new_tokens: 2}}
        variants:
          big_batch: {{batch_size: 8}}
        """,
    )
    outcome = run_study(load_study(path), tmp_path / "out", progress=False, log=lambda _: None)
    assert set(outcome.statuses.values()) == {"complete"}
    summary = json.loads((tmp_path / "out/runs/big_batch/seed-0/summary.json").read_text())
    assert summary["tokens_seen"] == 12 * 4 * 16 and summary["step"] == 6
    recorded = yaml.safe_load((tmp_path / "out/study.yaml").read_text())
    assert recorded["variants"]["big_batch"] == {
        "description": "",
        "batch_size": 8,
        "max_steps": 6,
        "warmup_steps": 2,
    }
    assert recorded["budget"]["max_steps"] == {"baseline": 12, "big_batch": 6}

    markdown = (tmp_path / "out/report/research_report.md").read_text()
    assert "**Budgets matched on tokens:**" in markdown
    assert "Steps per configuration: baseline 12, big_batch 6." in markdown
    assert "equal tokens (768 tokens; end of schedule (matched budgets))" in markdown
    assert "equal FLOPs (" in markdown and "; indicative)" in markdown
    # the matched steps are the design, not a second factor
    assert "| big_batch | batch_size=8, max_steps=6, warmup_steps=2 | batch size | no |" in markdown


# ----------------------------------------------------------- budget ladder, compute multipliers


def test_the_ladder_trains_the_baseline_at_each_multiple_of_its_budget():
    s = build_study(
        {
            **BASE,
            "baseline": {**BASE["baseline"], "train": {"max_steps": 40, "warmup_fraction": 0.1}},
            "budget": {"ladder": [0.25, 0.5, 1, 2]},
            "variants": {"wide": {"d_model": 64}},
        }
    )
    assert steps_of(s) == {
        "baseline": (40, 4),
        "wide": (40, 4),
        "budget=0.25x": (10, 1),
        "budget=0.5x": (20, 2),
        "budget=2x": (80, 8),
    }
    assert s.resolved()["budget"]["ladder_variants"] == {
        "budget=0.25x": 0.25,
        "budget=0.5x": 0.5,
        "budget=2x": 2.0,
    }
    with pytest.raises(ConfigError, match="two or more other budgets"):
        build_study({**BASE, "budget": {"ladder": [1, 2]}})
    with pytest.raises(
        ConfigError, match=r"budget.ladder at 0.05x \(1 steps\): train.warmup_steps"
    ):
        build_study({**BASE, "budget": {"ladder": [0.05, 2]}})  # warmup 2 of 1 step


def budget_study_file(tmp_path, budget: str, variants: str, data: str = "{source: builtin}"):
    return write_yaml(
        tmp_path / "budget_study.yaml",
        f"""\
        name: budgeted
        seeds: [0]
        data: {data}
        budget: {budget}
        baseline:
          model: {{d_model: 32, n_heads: 2, n_layers: 1, d_ff: 64}}
          train: {{batch_size: 4, seq_len: 16, max_steps: 40, warmup_fraction: 0.1,
                  eval_every: 10, eval_tokens: 256}}
        variants: {variants}
        """,
    )


@pytest.mark.parametrize("spelling", ["max_steps", "train.max_steps", "baseline.max_steps"])
def test_set_max_steps_moves_the_ladder_with_the_baseline(tmp_path, spelling):
    path = budget_study_file(tmp_path, "{ladder: [0.25, 0.5, 1, 2]}", "{wide: {d_model: 64}}")
    s = load_study(path, [f"{spelling}=30"])
    # each rung stays its multiple of the new baseline: max(1, round(multiple x 30))
    assert steps_of(s) == {
        "baseline": (30, 3),
        "wide": (30, 3),
        "budget=0.25x": (8, 1),  # 7.5, rounded
        "budget=0.5x": (15, 2),
        "budget=2x": (60, 6),
    }
    rung = next(r for r in s.runs if r.variant == "budget=0.25x")
    assert rung.changes == {"max_steps": 8, "warmup_steps": 1}
    assert "(8 steps)" in s.resolved()["variants"]["budget=0.25x"]["description"]


def test_set_max_steps_rematches_every_variant_to_the_new_baseline(tmp_path):
    path = budget_study_file(
        tmp_path, "{match: tokens, ladder: [0.5, 1, 2]}", "{big: {batch_size: 12}}"
    )
    s = match_budgets(load_study(path, ["max_steps=30"]), 512)
    # 30 steps x 4 x 16 = 1,920 tokens; big spends 192 a step
    assert steps_of(s) == {
        "baseline": (30, 3),
        "big": (10, 1),
        "budget=0.5x": (15, 2),
        "budget=2x": (60, 6),
    }
    assert s.budget["baseline_budget"] == 1920


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "variants.big.max_steps=5",
            "--set variants.big.max_steps=5: budget: match: tokens sets every variant's "
            "max_steps, but big set(s) max_steps too; change the baseline's max_steps",
        ),
        (
            "variants.budget=0.5x.max_steps=5",
            "--set variants.budget=0.5x.max_steps=5: the budget ladder's rungs are the "
            "baseline at multiples of its budget, not variants of their own; use --set "
            "max_steps=N",
        ),
    ],
)
def test_a_set_that_would_break_the_budget_design_is_refused(tmp_path, capsys, override, message):
    from lmablate.cli import main

    path = budget_study_file(
        tmp_path, "{match: tokens, ladder: [0.5, 1, 2]}", "{big: {batch_size: 12}}"
    )
    assert main(["run", str(path), "--dry-run", "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_a_dry_run_with_set_max_steps_shows_the_rungs_at_their_multiples(
    tmp_path, capsys, corpus, tokenizer_dir
):
    from lmablate.cli import main

    data = f"{{source: local, path: {corpus}, tokenizer: {tokenizer_dir}, num_documents: null}}"
    path = budget_study_file(tmp_path, "{ladder: [0.5, 1, 2]}", "{}", data=data)
    assert main(["run", str(path), "--dry-run", "--quiet", "--set", "max_steps=30"]) == 0
    rows = {
        line.split()[0]: line.split()
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(("baseline", "budget="))
    }
    assert rows["baseline"][3] == f"{30 * 64:,}" and rows["baseline"][-1] == "-"
    assert rows["budget=0.5x"][3] == f"{15 * 64:,}"
    assert rows["budget=0.5x"][-2:] == ["warmup_steps=2,", "max_steps=15"]
    assert rows["budget=2x"][3] == f"{60 * 64:,}"
    assert rows["budget=2x"][-2:] == ["warmup_steps=6,", "max_steps=60"]


E, A, ALPHA = 2.0, 1.5, 0.3


def law(c: float) -> float:
    return E + A * c ** (-ALPHA)


def test_the_power_law_fit_recovers_known_parameters():
    rng = np.random.default_rng(0)
    compute = [0.125, 0.25, 0.5, 1, 2, 4, 8] * 3
    loss = [law(c) + rng.normal(0, 0.002) for c in compute]
    fit = fit_power_law(compute, loss)
    assert (fit["E"], fit["A"], fit["alpha"]) == pytest.approx((E, A, ALPHA), rel=0.05)
    assert all(v is not None and v < 0.1 for v in fit["se"].values())
    assert fit["points"] == 21 and fit["rmse"] < 0.004
    assert fit_power_law([1, 2], [3.0, 2.9]) is None  # three parameters need three budgets


def ladder_study(
    tmp_path, variant_losses: dict[str, list[float]], variant_compute: float, ladder_loss=law
):
    """Run directories of a ladder (by default one that follows the law exactly), and variants
    beside it."""
    from lmablate.analysis.rundata import RunData, StudyData

    rungs = {"budget=0.25x": 0.25, "budget=0.5x": 0.5, "budget=2x": 2.0, "budget=4x": 4.0}
    seeds = list(range(len(next(iter(variant_losses.values())))))
    runs = []

    def run(variant, seed, compute, loss):
        summary = {"status": "complete", "final_val_loss": loss, "total_flops": compute * 1e12}
        runs.append(RunData(variant, seed, tmp_path, None, summary))

    for seed in seeds:
        run("baseline", seed, 1.0, ladder_loss(1.0))
        for name, multiple in rungs.items():
            run(name, seed, multiple, ladder_loss(multiple))
        for variant, losses in variant_losses.items():
            run(variant, seed, variant_compute, losses[seed])
    study = {
        "seeds": seeds,
        "variants": {name: {} for name in [*variant_losses, *rungs]},
        "budget": {"ladder_variants": rungs},
    }
    return StudyData(tmp_path, study, runs)


def per_run(study):
    return [
        {
            "variant": r.variant,
            "status": "complete",
            "score": r.final_score,
            "total_flops": r.summary["total_flops"],
        }
        for r in study.runs
    ]


def test_a_known_compute_multiplier_is_recovered(tmp_path):
    # "better" reaches at the baseline's compute the loss the baseline reaches at 2x: worth 2x;
    # "far" matches the baseline at 16x, outside the ladder (0.25x to 4x): an extrapolation
    study = ladder_study(
        tmp_path,
        {"better": [law(2.0) - 0.01, law(2.0) + 0.01, law(2.0)], "far": [law(16.0)] * 3},
        variant_compute=1.0,
    )
    out = compute_multipliers(study, per_run(study))
    assert (out["fit"]["E"], out["fit"]["alpha"]) == pytest.approx((E, ALPHA), rel=1e-3)
    assert out["fit"]["well_determined"]
    better = out["multipliers"]["better"]
    assert better["multiplier"] == pytest.approx(2.0, rel=1e-3)
    assert better["ci_low"] < 2.0 < better["ci_high"] and not better["extrapolated"]
    assert "seeds (3)" in better["interval_from"]
    far = out["multipliers"]["far"]
    assert far["multiplier"] == pytest.approx(16.0, rel=1e-2) and far["extrapolated"]
    assert set(out["multipliers"]) == {"better", "far"}  # the rungs are the reference


def test_a_tuned_study_converts_each_configuration_at_its_tuned_choice(tmp_path):
    """At its written learning rate "muon" only matches the baseline (1x); its tuned choice
    reaches the baseline's 2x loss at 1x compute. The multiplier is the choice's, named so."""
    from lmablate.report.format import represented
    from lmablate.report.multipliers import scaling_section

    choice = "muon,learning_rate=0.01"
    study = ladder_study(
        tmp_path, {"muon": [law(1.0) + 0.05] * 3, choice: [law(2.0)] * 3}, variant_compute=1.0
    )
    out = compute_multipliers(study, per_run(study), {"muon": choice, "baseline": "baseline"})
    muon = out["multipliers"]["muon"]
    assert muon["run"] == choice and muon["multiplier"] == pytest.approx(2.0, rel=1e-3)
    assert out["tuned"] and out["ladder_is_baseline_choice"]
    untuned = compute_multipliers(study, per_run(study))["multipliers"]["muon"]
    assert untuned["run"] == "muon" and untuned["multiplier"] < 1.0

    assert represented("muon", choice) == "muon (learning_rate=0.01)"
    assert represented("baseline", "learning_rate=0.01") == "baseline (learning_rate=0.01)"
    assert represented("muon", "muon") == "muon"
    text = "\n".join(scaling_section(SimpleNamespace(findings={}, scaling=out)))
    assert "| muon (learning_rate=0.01) |" in text and "tuned choice" in text
    assert "untuned curve" not in text
    out = compute_multipliers(study, per_run(study), {"muon": choice, "baseline": "budget=2x"})
    assert not out["ladder_is_baseline_choice"]
    assert "untuned curve" in "\n".join(scaling_section(SimpleNamespace(findings={}, scaling=out)))


def test_one_seed_multipliers_take_their_interval_from_the_fit(tmp_path):
    rng = np.random.default_rng(1)
    study = ladder_study(tmp_path, {"half": [law(0.5)]}, variant_compute=1.0)
    for run in study.runs:  # a noisy ladder: the fit is uncertain
        if run.variant != "half":
            run.summary["final_val_loss"] += rng.normal(0, 0.01)
    out = compute_multipliers(study, per_run(study))
    half = out["multipliers"]["half"]
    assert half["multiplier"] == pytest.approx(0.5, rel=0.2)
    assert half["ci_low"] < half["multiplier"] < half["ci_high"]
    assert half["interval_from"].startswith("fit uncertainty")


def test_a_loss_below_the_fit_floor_has_no_multiplier(tmp_path):
    study = ladder_study(tmp_path, {"magic": [E - 0.5] * 2}, variant_compute=1.0)
    row = compute_multipliers(study, per_run(study))["multipliers"]["magic"]
    assert row["multiplier"] is None and row["below_fit_floor"]


ZIGZAG = {0.25: 3.0, 0.5: 3.3, 1.0: 2.9, 2.0: 3.2, 4.0: 2.8}  # no law describes it
# "2.71x", "0.46 ×": a multiplier as a number (not a rung's name, budget=0.25x)
MULTIPLIER_NUMBER = re.compile(r"(?<![=.\d])\d+(?:\.\d+)?\s*[x×]")


def scaling_report(out: dict) -> str:
    from lmablate.report.multipliers import scaling_section

    return "\n".join(scaling_section(SimpleNamespace(findings={}, scaling=out)))


@pytest.mark.parametrize(
    ("ladder_loss", "problem"),
    [
        (ZIGZAG.get, "residual"),  # zig-zags with compute: misses its rungs by the effect
        (lambda c: 3.0 + 0.1 * c, "A sits on its lower bound"),  # rises with compute
        (lambda c: A * c ** (-ALPHA), "E sits on its lower bound"),  # no floor: E = 0
    ],
)
def test_a_ladder_the_law_cannot_fit_gives_no_multiplier(tmp_path, ladder_loss, problem):
    study = ladder_study(
        tmp_path, {"better": [ladder_loss(1.0) - 0.2]}, variant_compute=1.0, ladder_loss=ladder_loss
    )
    out = compute_multipliers(study, per_run(study))
    fit = out["fit"]
    assert not fit["usable"] and any(problem in p for p in fit["problems"]), fit["problems"]
    better = out["multipliers"]["better"]
    assert better["multiplier"] is None and better["baseline_compute_to_match"] is None
    assert better["ci_low"] is None and better["ci_high"] is None
    assert better["reason"].startswith("the power-law fit is unusable: ")
    text = scaling_report(out)
    assert "No compute multiplier is given" in text and "interpolated between rungs" in text
    assert all(p in text for p in fit["problems"])
    assert not MULTIPLIER_NUMBER.search(text), text
    table = multiplier_table(SimpleNamespace(findings={}, scaling=out), "ladder")
    assert "No compute multiplier: the power law does not describe" in table
    header = next(line for line in table.splitlines() if line.startswith("Configuration"))
    assert "Multiplier" not in header  # no row has one, so the column is left out
    assert "interpolation, not a fit" in table


def test_the_paper_table_prints_a_usable_fits_multiplier(tmp_path):
    study = ladder_study(tmp_path, {"better": [law(2.0)] * 3}, variant_compute=1.0)
    table = multiplier_table(
        SimpleNamespace(findings={}, scaling=compute_multipliers(study, per_run(study))), "ladder"
    )
    row = next(line for line in table.splitlines() if line.startswith("better &"))
    cells = row.removesuffix(r" \\").split(" & ")
    assert cells[4].startswith("2.00 [") and cells[5] == "no"  # 2x, inside the ladder
    assert "Compute multipliers from the baseline's ladder (15 runs" in table


def test_an_unusable_fit_draws_the_ladder_without_a_fitted_line(tmp_path):
    from lmablate.report.figures import draw_scaling

    study = ladder_study(tmp_path, {"better": [2.95]}, variant_compute=1.0, ladder_loss=ZIGZAG.get)
    analysis = SimpleNamespace(findings={}, per_run=per_run(study))
    analysis.scaling = compute_multipliers(study, analysis.per_run)
    styles = {"better": {"marker": "s", "color": "#0072B2"}}
    (figure,) = draw_scaling(study, analysis, styles, tmp_path).values()
    series = figure["panels"][0]["series"]
    assert not any("fit" in s or MULTIPLIER_NUMBER.search(s) for s in series), series
    reached = plain(0.5 * 2**0.875)  # see the interpolation test below
    assert f"better: ladder reaches its loss at {reached}·C0 (interpolated)" in series
    assert "rung means joined (interpolation between rungs)" in series


def test_a_noisy_power_law_still_gives_the_hand_computed_multiplier(tmp_path):
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 1e-3, size=50).tolist()
    study = ladder_study(
        tmp_path,
        {"better": [3.2 + rng.normal(0, 1e-3) for _ in range(3)]},
        variant_compute=1.0,
        ladder_loss=lambda c: law(c) + noise.pop(),
    )
    out = compute_multipliers(study, per_run(study))
    assert out["fit"]["usable"] and out["fit"]["problems"] == []
    better = out["multipliers"]["better"]
    by_hand = (A / (3.2 - E)) ** (1 / ALPHA)  # L(C) = 3.2 at C = (A / (L - E))^(1/alpha)
    assert better["multiplier"] == pytest.approx(by_hand, rel=0.03)
    assert better["ci_low"] < by_hand < better["ci_high"] and better["reason"] is None
    text = scaling_report(out)
    assert f"| better | {better['val_loss']:.4f} | 1.00 | {better['multiplier']:.3g} " in text


def test_draws_that_never_reach_the_loss_count_as_infinite_compute(tmp_path):
    from lmablate.analysis.scaling import DRAWS, draw_multipliers, percentile_interval
    from lmablate.report.data import json_safe

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, size=5).tolist()
    ladder = lambda c: law(c) + noise[[0.25, 0.5, 1.0, 2.0, 4.0].index(c)]  # noqa: E731
    probe = ladder_study(tmp_path, {"near": [3.0]}, variant_compute=1.0, ladder_loss=ladder)
    fit = compute_multipliers(probe, per_run(probe))["fit"]
    near_floor = fit["E"] + 0.03  # E's standard error (0.06) puts many draws' floor above it
    study = ladder_study(tmp_path, {"near": [near_floor]}, variant_compute=1.0, ladder_loss=ladder)
    out = compute_multipliers(study, per_run(study))
    assert out["fit"]["usable"]
    near = out["multipliers"]["near"]
    assert near["multiplier"] > 1000 and near["extrapolated"]
    assert near["ci_high"] == math.inf and near["ci_high_unbounded"]
    assert math.isfinite(near["ci_low"]) and not near["ci_low_unbounded"]

    # the same draws: the floor above the loss in about a third of them
    params = np.random.default_rng(1).multivariate_normal(
        [fit["E"], fit["A"], fit["alpha"]], fit["covariance"], DRAWS
    )
    values = draw_multipliers(params, np.full(DRAWS, near_floor), 1.0)
    assert 0.1 < np.isinf(values).mean() < 0.5 and not np.isnan(values).any()
    assert percentile_interval(values)[1] == math.inf
    dropped = np.percentile(values[np.isfinite(values)], 97.5)  # the old rule: left out
    assert math.isfinite(dropped)

    # research_data.json: null and the flag, never a bare Infinity
    written = json.dumps(json_safe(out), allow_nan=False)
    row = json.loads(written)["multipliers"]["near"]
    assert row["ci_high"] is None and row["ci_high_unbounded"] is True
    assert f"[{plain(near['ci_low'])}, unbounded]" in scaling_report(out)


def test_interpolation_between_rungs_against_a_hand_computation(tmp_path):
    from lmablate.analysis.scaling import interpolate_ladder

    ladder = [(0.5, 3.6), (0.25, 4.0), (2.0, 3.1), (1.0, 3.4)]  # any order: sorted by compute
    # 3.5 lies halfway from 3.6 (at 0.5) to 3.4 (at 1): halfway in log compute, 0.5·√2
    assert interpolate_ladder(ladder, 3.5) == {
        "compute": pytest.approx(0.5 * 2**0.5),
        "beyond": None,
    }
    assert interpolate_ladder(ladder, 3.6)["compute"] == pytest.approx(0.5)
    assert interpolate_ladder(ladder, 4.0)["compute"] == 0.25
    assert interpolate_ladder(ladder, 4.1) == {
        "compute": None,
        "beyond": "cheaper than the cheapest rung",
    }
    assert interpolate_ladder(ladder, 3.0) == {"compute": None, "beyond": "past the largest rung"}
    # ZIGZAG: 3.0, 3.3, 2.9, 3.2, 2.8. The loss 2.95 is first reached between 0.5 (3.3) and
    # 1 (2.9), a share (3.3 - 2.95) / (3.3 - 2.9) = 0.875 of the way: 0.5·2^0.875
    study = ladder_study(tmp_path, {"better": [2.95]}, variant_compute=1.0, ladder_loss=ZIGZAG.get)
    out = compute_multipliers(study, per_run(study))
    assert not out["ladder_monotone"]
    row = out["multipliers"]["better"]["interpolation"]
    assert row["baseline_compute_to_match"] == pytest.approx(0.5 * 2**0.875)
    assert row["beyond_the_ladder"] is None


def test_a_ladder_study_reports_multipliers_and_ranks_only_the_compared(
    tmp_path, corpus, tokenizer_dir
):
    path = write_yaml(
        tmp_path / "study.yaml",
        f"""\
        name: ladder
        seeds: [0]
        budget: {{match: tokens, ladder: [0.5, 1, 2, 4]}}
        data: {{source: local, path: {corpus}, tokenizer: {tokenizer_dir}, num_documents: null}}
        baseline:
          model: {{d_model: 32, n_heads: 2, n_layers: 1, d_ff: 64}}
          train: {{batch_size: 4, seq_len: 16, max_steps: 12, warmup_fraction: 0.25,
                  learning_rate: 3.0e-3, eval_every: 6, eval_tokens: 256, log_every: 2}}
        samples: {{prompts: [The], max_new_tokens: 2}}
        variants:
          big_batch: {{batch_size: 8}}
        """,
    )
    outcome = run_study(load_study(path), tmp_path / "out", progress=False, log=lambda _: None)
    assert set(outcome.statuses.values()) == {"complete"}
    assert len(outcome.statuses) == 5  # baseline, big_batch, and the rungs 0.5x, 2x, 4x
    steps = {
        variant: json.loads((tmp_path / f"out/runs/{variant}/seed-0/summary.json").read_text())[
            "step"
        ]
        for variant in ("budget=0.5x", "budget=2x", "budget=4x", "big_batch")
    }
    assert steps == {"budget=0.5x": 6, "budget=2x": 24, "budget=4x": 48, "big_batch": 6}

    report = tmp_path / "out" / "report"
    data = json.loads((report / "research_data.json").read_text())
    scaling = data["statistical_analysis"]["compute_multipliers"]
    assert scaling["fit"]["points"] == 4 and set(scaling["multipliers"]) == {"big_batch"}
    markdown = (report / "research_report.md").read_text()
    assert "## Compute Multipliers" in markdown and "| big_batch |" in markdown
    assert (report / "compute_multipliers.png").stat().st_size > 10_000
    ranked = data["results_summary"]["key_findings"]
    assert ranked["best_performing_config"] in ("baseline", "big_batch")
    assert "budget=" not in markdown.split("### Confounds")[1].split("###")[0]


# ------------------------------------------------------------------------------------ tuning


def test_tuning_trains_every_configuration_at_every_value_and_needs_a_test_split():
    raw = {
        **BASE,
        "data": {"source": "builtin", "test_fraction": 0.1},
        "variants": {"lion": {"optimizer": "lion"}},
        "tune": {"learning_rate": [3.0e-4, 1.0e-3]},
    }
    s = build_study(raw)
    assert s.tuning["variants"] == {
        "baseline": ["learning_rate=0.0003", "baseline"],
        "lion": ["lion,learning_rate=0.0003", "lion"],
    }
    assert len({r.variant for r in s.runs}) == 4
    with pytest.raises(ConfigError, match=r"give the data a test split"):
        build_study({**raw, "data": {"source": "builtin"}})


def tuned_study(tmp_path, losses: dict[str, tuple[list[float], list[float]]]):
    """Run directories of a tuned study: {run name: (validation losses, test losses)}."""
    from lmablate.analysis.rundata import RunData, StudyData

    candidates = {
        "baseline": ["learning_rate=0.0001", "baseline", "learning_rate=0.01"],
        "muon": ["muon,learning_rate=0.0001", "muon", "muon,learning_rate=0.01"],
    }
    lr = {"0.0001": 1e-4, "0.01": 1e-2}
    runs = []
    for name, (val, test) in losses.items():
        value = lr.get(name.rsplit("=", 1)[-1], 1e-3)
        for seed, (v, t) in enumerate(zip(val, test, strict=True)):
            summary = {"status": "complete", "final_val_loss": v, "final_test_loss": t}
            config = {"train": {"learning_rate": value}}
            runs.append(RunData(name, seed, tmp_path, config, summary))
    study = {
        "seeds": [0, 1, 2],
        "variants": {name: {} for name in losses if name != "baseline"},
        "tuning": {
            "kind": "grid",
            "fields": {"learning_rate": [1e-4, 1e-3, 1e-2]},
            "variants": candidates,
        },
    }
    return StudyData(tmp_path, study, runs)


def test_the_choice_is_made_on_validation_and_the_number_reported_from_test(tmp_path):
    # muon's best candidate on validation (lr 1e-3) is not its best on test (lr 1e-2, which
    # would look better had the choice been made on the reported numbers)
    study = tuned_study(
        tmp_path,
        {
            "learning_rate=0.0001": ([5.0, 5.1, 4.9], [5.0, 5.1, 4.9]),
            "baseline": ([4.0, 4.1, 3.9], [4.2, 4.3, 4.1]),
            "learning_rate=0.01": ([4.5, 4.6, 4.4], [4.5, 4.6, 4.4]),
            "muon,learning_rate=0.0001": ([4.9, 5.0, 4.8], [4.9, 5.0, 4.8]),
            "muon": ([3.5, 3.6, 3.4], [3.9, 4.05, 3.75]),
            "muon,learning_rate=0.01": ([3.7, 3.8, 3.6], [3.0, 3.1, 2.9]),
        },
    )
    out = tuned_comparison(study)
    muon = out["configurations"]["muon"]
    assert muon["chosen"] == "muon" and muon["values"] == {"learning_rate": 1e-3}
    assert muon["test_loss"] == pytest.approx(3.9)  # its test loss, not the best test loss
    assert muon["validation_loss"]["muon,learning_rate=0.01"] == pytest.approx(3.7)
    assert muon["at_edge"] == []
    (comparison,) = out["comparisons"]
    assert comparison["variant"] == "muon"
    assert comparison["difference"] == pytest.approx(3.9 - 4.2)  # on test, paired by seed
    assert comparison["test"] == "paired t"
    assert out["ranking"] == ["muon", "baseline"]


def test_a_choice_at_the_edge_of_the_grid_is_flagged(tmp_path):
    study = tuned_study(
        tmp_path,
        {
            "learning_rate=0.0001": ([5.0] * 3, [5.0] * 3),
            "baseline": ([4.5] * 3, [4.5] * 3),
            "learning_rate=0.01": ([4.0, 4.1, 3.9], [4.0, 4.1, 3.9]),
            "muon,learning_rate=0.0001": ([4.0] * 3, [4.0] * 3),
            "muon": ([4.5] * 3, [4.5] * 3),
            "muon,learning_rate=0.01": ([4.6] * 3, [4.6] * 3),
        },
    )
    rows = tuned_comparison(study)["configurations"]
    assert rows["baseline"]["at_edge"] == ["learning_rate"]
    assert rows["muon"]["at_edge"] == ["learning_rate"]


def test_a_tuned_study_end_to_end(tmp_path, corpus, tokenizer_dir):
    path = write_yaml(
        tmp_path / "study.yaml",
        f"""\
        name: tuned
        seeds: [0]
        data: {{source: local, path: {corpus}, tokenizer: {tokenizer_dir}, num_documents: null,
                test_fraction: 0.2}}
        tune: {{learning_rate: [1.0e-3, 1.0e-2]}}
        baseline:
          model: {{d_model: 32, n_heads: 2, n_layers: 1, d_ff: 64}}
          train: {{batch_size: 4, seq_len: 16, max_steps: 8, warmup_steps: 2,
                  learning_rate: 1.0e-3, eval_every: 4, eval_tokens: 256, log_every: 2}}
        samples: {{prompts: [The], max_new_tokens: 2}}
        variants:
          lion: {{optimizer: lion}}
        """,
    )
    outcome = run_study(load_study(path), tmp_path / "out", progress=False, log=lambda _: None)
    assert len(outcome.statuses) == 4 and set(outcome.statuses.values()) == {"complete"}
    summary = json.loads((tmp_path / "out/runs/lion/seed-0/summary.json").read_text())
    assert summary["final_test_loss"] > 0 and summary["test"]["targets"] > 0
    overlap = summary["data"]["leakage"]["overlap"]
    held_out = summary["data"]["documents"]["test"]
    removed = overlap["moved_to_training"]["test"] + overlap["dropped"]["test"]
    assert held_out + removed == 12  # a fifth of the 60 documents, before the overlap check
    report = tmp_path / "out" / "report"
    markdown = (report / "research_report.md").read_text()
    assert "## Tuned Comparison" in markdown
    assert "learning_rate ∈ {0.001, 0.01}" in markdown
    assert "**Tuned comparison** (each configuration at its own best learning_rate" in markdown
    assert "### Tuning" not in markdown  # the optimizers' learning rates were tuned
    assert "## Learning-Rate Sensitivity" in markdown
    assert f"**0** of the {held_out} test documents appear in training or validation." in markdown
    assert (report / "lr_sensitivity.png").stat().st_size > 10_000
    data = json.loads((report / "research_data.json").read_text())
    tuned = data["statistical_analysis"]["tuned_comparison"]["configurations"]
    assert set(tuned) == {"baseline", "lion"}
    assert all(row["test_loss"] is not None for row in tuned.values())
    paper = report / "paper"
    table = (paper / "tuned_table.tex").read_text()
    assert r"learning\_rate $\in$ \{0.001, 0.01\}" in table
    assert {"baseline &", "lion &"} <= {line[: line.find("&") + 1] for line in table.splitlines()}
    assert r"\input{tuned_table}" in (paper / "paper.tex").read_text()
    methods = (paper / "methods.tex").read_text()
    assert f"reported on the {held_out} test documents" in methods
    assert "Lion ($\\beta_{1}$ 0.9, $\\beta_{2}$ 0.99; lion)" in methods


def test_learning_rate_sensitivity_by_hand(tmp_path):
    """Wortsman et al. 2023: mean over the grid of min(L(lr), L0) - min L; a diverged seed
    counts as L0 (here 8.0)."""
    study = tuned_study(
        tmp_path,
        {
            "learning_rate=0.0001": ([5.0, 5.2, 5.1], [0] * 3),
            "baseline": ([4.0, 4.1, 3.9], [0] * 3),
            "learning_rate=0.01": ([4.5, 4.6, 4.4], [0] * 3),
            "muon,learning_rate=0.0001": ([4.9, 5.0, 4.8], [0] * 3),
            "muon": ([3.5, 3.6, 3.4], [0] * 3),
            "muon,learning_rate=0.01": ([3.7, 3.8, 3.6], [0] * 3),
        },
    )
    for run in study.runs:
        run.records = [{"kind": "eval", "step": 0, "val_loss": 8.0}]
    diverged = next(r for r in study.runs if r.variant == "muon,learning_rate=0.01" and r.seed == 2)
    diverged.summary = {"status": "diverged", "final_val_loss": None}
    out = lr_sensitivity(study)
    base = out["baseline"]
    assert [p["learning_rate"] for p in base["points"]] == [1e-4, 1e-3, 1e-2]
    assert [p["val_loss"] for p in base["points"]] == pytest.approx([5.1, 4.0, 4.5])
    assert base["sensitivity"] == pytest.approx(((5.1 - 4.0) + 0 + (4.5 - 4.0)) / 3)
    assert base["best_learning_rate"] == 1e-3
    muon = out["muon"]
    high = muon["points"][2]
    assert high["failed_seeds"] == 1 and high["val_loss"] == pytest.approx((3.7 + 3.8 + 8.0) / 3)
    assert muon["sensitivity"] == pytest.approx(((4.9 - 3.5) + 0 + (high["val_loss"] - 3.5)) / 3)


def test_names_a_directory_cannot_hold_are_refused_before_training():
    with pytest.raises(ConfigError, match=r"is not a valid variant name \(at most 120"):
        study(variants={"v" * 300: {"d_model": 64}})
    long = "x" * 110
    with pytest.raises(ConfigError, match=r"would be 1\d\d characters, more than the 120"):
        study(variants={long: {}}, sweeps=[{"grid": {"d_model": [64]}, "over": [long]}])
