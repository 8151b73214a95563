"""The scale axis: every configuration at every size as ordinary runs, budgets that follow the
size, and the Scale section's numbers (trend, Kendall τ, decision agreement, flips) against
hand computations on synthetic run directories."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from test_claims import line, write_run, write_study

from lmablate.analysis.findings import analyze
from lmablate.analysis.rundata import load_study_dir
from lmablate.analysis.scale import decision_agreement, kendall_tau, trend
from lmablate.config.study import build_study
from lmablate.errors import ConfigError
from lmablate.model.counts import count_parameters, resolve_vocab_size
from lmablate.report.package import build_report
from lmablate.report.scale import scale_section
from lmablate.study.budgets import scale_budgets

BASELINE = {
    "model": {"d_model": 32, "n_heads": 2, "n_layers": 2, "d_ff": 64},
    "train": {"batch_size": 4, "seq_len": 16, "max_steps": 40, "warmup_steps": 4},
}


def study(scale: dict, **extra) -> dict:
    return {
        "name": "scale",
        "seeds": [0, 1],
        "data": {"source": "builtin"},
        "baseline": BASELINE,
        "variants": {"high_lr": {"learning_rate": 1e-2}},
        "scale": scale,
        **extra,
    }


def test_every_configuration_trains_at_every_size():
    built = build_study(study({"sizes": [{"width": 0.5}, {"width": 1}, {"width": 2, "depth": 2}]}))
    shapes = {
        r.variant: (r.config.model.d_model, r.config.model.n_heads, r.config.model.n_layers)
        for r in built.runs
        if r.seed == 0
    }
    assert shapes == {
        "baseline": (32, 2, 2),
        "high_lr": (32, 2, 2),
        "size=w0.5": (16, 1, 2),
        "high_lr,size=w0.5": (16, 1, 2),
        "size=w2d2": (64, 4, 4),
        "high_lr,size=w2d2": (64, 4, 4),
    }
    assert built.runs[0].config.model.head_dim == 16  # width keeps the head dimension
    wide = next(r for r in built.runs if r.variant == "high_lr,size=w2d2")
    assert wide.config.train.learning_rate == 1e-2 and wide.config.model.d_ff == 128
    record = built.resolved()["scale"]
    assert record["sizes"] == ["w0.5", "w1", "w2d2"]
    assert record["variants"]["high_lr"] == {
        "w0.5": "high_lr,size=w0.5",
        "w1": "high_lr",
        "w2d2": "high_lr,size=w2d2",
    }


def test_the_written_shape_trains_when_no_size_is_it():
    built = build_study(
        study({"sizes": [{"width": 2}, {"name": "tiny", "model": {"d_model": 16}}]})
    )
    record = built.scale
    assert record["sizes"] == ["reference", "w2", "tiny"]
    assert record["variants"]["baseline"]["reference"] == "baseline"
    tiny = next(r for r in built.runs if r.variant == "size=tiny")
    assert tiny.config.model.d_model == 16 and tiny.config.model.n_heads == 2


@pytest.mark.parametrize(
    ("scale", "extra", "message"),
    [
        ({"sizes": [{"width": 0.3}]}, {}, "not a whole number"),
        ({"sizes": [{"depth": 0.25}]}, {}, "not a whole number of layers"),
        ({"sizes": [{"width": 2}, {"width": 2}]}, {}, "named twice"),
        ({"sizes": [{}]}, {}, "needs width, depth or model"),
        ({"sizes": [{"model": {"learning_rate": 1}}]}, {}, "not a shape field"),
        ({"sizes": [{"width": 2}], "tokens_per_parameter": 20}, {}, "tokens: per_parameter"),
        ({"sizes": [{"width": 2}]}, {"budget": {"ladder": [0.5, 2]}}, "does not combine"),
    ],
)
def test_an_impossible_scale_axis_is_refused(scale, extra, message):
    with pytest.raises(ConfigError, match=message):
        build_study(study(scale, **extra))


def test_a_tokens_per_parameter_budget_sets_each_sizes_steps():
    built = build_study(study({"sizes": [{"width": 1}, {"width": 2}], "tokens": "per_parameter"}))
    vocab = 300
    scaled = scale_budgets(built, vocab)

    def params(run):
        model = run.config.model
        return count_parameters(model, resolve_vocab_size(model, vocab))["total"]

    base = next(r for r in scaled.runs if r.variant == "baseline")
    wide = next(r for r in scaled.runs if r.variant == "size=w2")
    assert base.config.train.max_steps == 40  # the reference keeps its written budget
    ratio = 40 * 4 * 16 / params(base)
    assert wide.config.train.max_steps == round(ratio * params(wide) / (4 * 16))
    assert wide.changes["max_steps"] == wide.config.train.max_steps
    fixed = scale_budgets(
        build_study(
            study({"sizes": [{"width": 2}], "tokens": "per_parameter", "tokens_per_parameter": 2})
        ),
        vocab,
    )
    for run in fixed.runs:
        assert run.config.train.max_steps == round(2 * params(run) / 64)


# ------------------------------------------------------------------------------ the numbers


def test_kendall_tau_and_decision_agreement_match_hand_counts():
    # orders a<b<c<d against a<c<b<d: one discordant pair of six, tau = (5 - 1) / 6
    small = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    large = {"a": 1.0, "b": 3.0, "c": 2.0, "d": 4.0}
    assert kendall_tau(list(small.values()), list(large.values())) == pytest.approx(4 / 6)
    assert decision_agreement(small, large) == pytest.approx(5 / 6)
    assert decision_agreement(small, {k: -v for k, v in small.items()}) == 0.0
    # a tie at one size only disagrees; at both, agrees
    assert decision_agreement({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 2.0}) == 0.0
    assert decision_agreement({"a": 1.0, "b": 1.0}, {"a": 2.0, "b": 2.0}) == 1.0


def test_the_trend_is_the_least_squares_slope_with_its_interval():
    points = [(0.0, 0.1), (1.0, 0.0), (2.0, -0.05), (0.0, 0.12), (1.0, 0.01), (2.0, -0.07)]
    result = trend(points)
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mx, my = sum(xs) / 6, sum(ys) / 6
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    residual = sum((y - my - slope * (x - mx)) ** 2 for x, y in points)
    se = math.sqrt(residual / 4 / sxx)
    t = 2.7764451051977987  # t_0.975 with 4 degrees of freedom
    assert result["slope"] == pytest.approx(slope)
    assert result["ci_low"] == pytest.approx(slope - t * se)
    assert result["ci_high"] == pytest.approx(slope + t * se)


def scale_dir(tmp_path, scores: dict[str, dict[str, list[float]]]):
    """A study directory of configurations at sizes s, m, l (1,000, 2,000 and 4,000 training
    tokens, so 1e6, 2e6 and 4e6 FLOPs); ``scores[config][size]``: final loss per seed."""
    tokens = {"s": 1000, "m": 2000, "l": 4000}
    table = {c: {size: c if size == "m" else f"{c},size={size}" for size in tokens} for c in scores}
    for config in table:
        table[config] = {
            size: (name.replace("baseline,", "") if config == "baseline" else name)
            for size, name in table[config].items()
        }
    variants = {name: {} for at in table.values() for name in at.values() if name != "baseline"}
    write_study(tmp_path, variants, seeds=3)
    raw = yaml.safe_load((tmp_path / "study.yaml").read_text())
    raw["scale"] = {"sizes": list(tokens), "tokens": "fixed", "variants": table}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    for config, at in table.items():
        for size, name in at.items():
            for seed, loss in enumerate(scores[config][size]):
                write_run(tmp_path, name, seed, line(8.0, loss, tokens[size]))
    return tmp_path


def test_a_verdict_that_flips_with_size_is_flagged(tmp_path):
    """``better`` is better at the two smaller sizes and worse at the largest: a reversal;
    ``same`` tracks the baseline everywhere."""
    base = {"s": [4.00, 4.02, 4.01], "m": [3.50, 3.52, 3.51], "l": [3.00, 3.02, 3.01]}
    scores = {
        "baseline": base,
        "better": {
            "s": [3.80, 3.83, 3.81],
            "m": [3.30, 3.33, 3.31],
            "l": [3.20, 3.23, 3.21],
        },
        "same": {k: [v + 0.001 for v in vs] for k, vs in base.items()},
    }
    analysis = analyze(load_study_dir(scale_dir(tmp_path, scores)))
    scale = analysis.scale
    assert scale["sizes"] == ["s", "m", "l"] and scale["largest"] == "l"
    assert analysis.ranking and {v for v, _ in analysis.ranking} == {"baseline", "better", "same"}
    at = scale["per_size"]
    assert at["s"]["comparisons"]["better"]["verdict"] == "better"
    assert at["l"]["comparisons"]["better"]["verdict"] == "worse"
    assert at["l"]["comparisons"]["better"]["difference"] == pytest.approx((0.2 + 0.21 + 0.2) / 3)
    flips = [f for f in scale["flips"] if f["configuration"] == "better"]
    assert {f["size"] for f in flips} == {"s", "m"} and all(f["reversal"] for f in flips)
    # at s: better < baseline < same; at l: baseline < same < better
    assert scale["agreement"]["s"]["decision_agreement"] == pytest.approx(1 / 3)
    assert scale["agreement"]["s"]["kendall_tau"] == pytest.approx(-1 / 3)
    assert scale["agreement"]["s"]["tau_ci_low"] is not None
    # differences -0.2, -0.2, +0.2 against log10 FLOPs 6, 6.301, 6.602: rising with scale
    assert scale["trends"]["better"]["slope"] > 0

    report = build_report(tmp_path)
    markdown = (report / "research_report.md").read_text()
    assert "## Scale" in markdown
    assert "**Reversal at scale:** better is better at sizes s, m but worse at l" in markdown
    assert (report / "scale_comparison.png").is_file()
    data = json.loads((report / "research_data.json").read_text())
    assert data["results_summary"]["scale"]["largest"] == "l"


def test_a_mup_configuration_keeps_its_base_width_at_every_size():
    raw = study({"sizes": [{"width": 0.5}, {"width": 2}]})
    raw["baseline"] = {**BASELINE, "model": {**BASELINE["model"], "parametrization": "mup"}}
    built = build_study(raw)
    at = {r.variant: r.config.model for r in built.runs if r.seed == 0}
    assert at["baseline"].width_mult == 1.0  # the written width is the base
    assert at["size=w2"].mup_base_width == 32 and at["size=w2"].width_mult == 2.0
    assert at["size=w0.5"].width_mult == 0.5 and at["size=w0.5"].mup_base_head_dim == 16


def test_a_tuned_scale_study_compares_each_size_at_its_own_best_learning_rate(tmp_path):
    """Two candidates (learning rates 0.001 and 0.01) per configuration and size: each is
    represented by the one lower on validation and read on test; the chosen rates per size
    are reported (the baseline's moves from 0.01 to 0.001 as it grows)."""
    valid = {  # final validation loss of (config, size, learning rate), every seed
        ("baseline", "s", 0.001): 4.2, ("baseline", "s", 0.01): 4.0,
        ("baseline", "l", 0.001): 3.0, ("baseline", "l", 0.01): 3.3,
        ("x", "s", 0.001): 4.1, ("x", "s", 0.01): 3.9,
        ("x", "l", 0.001): 3.2, ("x", "l", 0.01): 2.9,
    }  # fmt: skip
    tokens = {"s": 1000, "l": 4000}
    table: dict[str, dict[str, str]] = {"baseline": {}, "x": {}}
    tuning: dict[str, list[str]] = {}
    runs = []
    for config in table:
        for size in tokens:
            name = (
                config
                if size == "l"
                else ("size=s" if config == "baseline" else f"{config},size=s")
            )
            table[config][size] = name
            tuning[name] = [f"{name},lr={lr}" for lr in (0.001, 0.01)]
            runs += [(f"{name},lr={lr}", config, size, lr) for lr in (0.001, 0.01)]
    variants = {
        n: {} for n in [*[v for at in table.values() for v in at.values()], *[r[0] for r in runs]]
    }
    variants.pop("baseline")
    write_study(tmp_path, variants, seeds=2)
    raw = yaml.safe_load((tmp_path / "study.yaml").read_text())
    raw["scale"] = {"sizes": ["s", "l"], "tokens": "fixed", "variants": table}
    raw["tuning"] = {"fields": {"learning_rate": [0.001, 0.01]}, "variants": tuning}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    for name, config, size, lr in runs:
        for seed in range(2):
            loss = valid[config, size, lr] + 0.01 * seed
            write_run(tmp_path, name, seed, line(8.0, loss, tokens[size]), learning_rate=lr)
            path = tmp_path / "runs" / name / f"seed-{seed}" / "summary.json"
            summary = json.loads(path.read_text())
            summary["final_test_loss"] = loss + 0.05
            path.write_text(json.dumps(summary))
    analysis = analyze(load_study_dir(tmp_path))
    scale = analysis.scale
    assert scale["tuned"] and scale["sizes"] == ["s", "l"]
    section = "\n".join(scale_section(analysis))
    assert "final test loss minus the baseline's" in section  # read on test, and named so
    assert "baseline test loss" in section and "baseline validation loss" not in section
    assert scale["learning_rates"] == {
        "baseline": {"s": 0.01, "l": 0.001},
        "x": {"s": 0.01, "l": 0.01},
    }
    large = scale["per_size"]["l"]
    assert large["configurations"]["x"]["run"] == "x,lr=0.01"
    assert large["configurations"]["baseline"]["score"]["mean"] == pytest.approx(3.055)
    assert large["comparisons"]["x"]["difference"] == pytest.approx(2.9 - 3.0)
