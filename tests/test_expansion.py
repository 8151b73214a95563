"""How a study expands: counted before it is built, bounded by max_runs, every configuration a
configuration of its own, integer ranges as integers. No training."""

from __future__ import annotations

import pytest

import lmablate.config.expand as expand
from lmablate.config.study import apply_study_overrides, build_study
from lmablate.errors import ConfigError

BASELINE = {
    "model": {"d_model": 32, "n_heads": 2, "n_layers": 2, "d_ff": 64},
    "train": {"batch_size": 4, "seq_len": 16, "max_steps": 10, "warmup_steps": 1},
}


def study(**top) -> dict:
    return {"name": "x", "data": {"source": "builtin"}, "baseline": BASELINE, **top}


def test_a_million_run_grid_is_refused_before_any_run_is_built(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the sweep was expanded before it was counted")

    monkeypatch.setattr(expand, "expand_sweeps", never)
    import lmablate.config.study as study_module

    monkeypatch.setattr(study_module, "expand_sweeps", never)
    grid = {
        "learning_rate": {"logspace": [1.0e-4, 1.0e-2], "num": 100},
        "warmup_fraction": {"linspace": [0.0, 0.5], "num": 100},
        "weight_decay": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9] * 10,
    }
    with pytest.raises(ConfigError, match=r"expands into 1,000,001 runs .*max_runs: 1000001"):
        build_study(study(sweeps=[{"grid": grid}]))


def test_the_count_is_the_number_of_runs_built():
    raw = study(
        seeds=[0, 1],
        variants={"wide": {"d_model": 64}},
        sweeps=[{"grid": {"learning_rate": [1.0e-3, 3.0e-3]}, "over": ["baseline", "wide"]}],
        budget={"ladder": [0.5, 1, 2]},
    )
    built = build_study(raw)
    counted, made_of = expand.count_runs(built.config)
    assert counted == len(built.runs) == (2 + 4 + 2) * 2
    assert "sweeps[0]: 4 points" in made_of and "2 budget rungs" in made_of


def test_max_runs_is_the_limit_and_can_be_raised():
    raw = study(seeds=[0, 1, 2], variants={"wide": {"d_model": 64}}, max_runs=5)
    with pytest.raises(ConfigError, match=r"6 runs .*more than max_runs \(5\)"):
        build_study(raw)
    raised, forced = apply_study_overrides(raw, ["max_runs=6"])
    assert len(build_study(raised, run_overrides=forced).runs) == 6


def test_an_integer_range_sweeps_integers():
    raw = study(sweeps=[{"grid": {"n_layers": {"linspace": [1, 4], "num": 4}}}])
    layers = [run.config.model.n_layers for run in build_study(raw).runs]
    assert layers == [2, 1, 3, 4]  # n_layers=2 is the baseline itself
    assert all(type(n) is int for n in layers)


def test_a_tuning_candidate_may_equal_another_configuration():
    """Tuning every configuration over a field can land one on another's setting: that is the
    design, not a duplicate variant."""
    raw = study(
        data={"source": "builtin", "test_fraction": 0.1},
        variants={"low_lr": {"learning_rate": 1.0e-3}},
        tune={"learning_rate": [1.0e-3, 3.0e-3]},
    )
    assert {run.variant for run in build_study(raw).runs} >= {"baseline", "low_lr"}


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ({"variants": {"same": {"learning_rate": 3.0e-4}}}, "variants.same changes nothing"),
        ({"variants": {"same": {"description": "only words"}}}, "it sets no field"),
        (
            {"variants": {"a": {"d_model": 64}, "b": {"model": {"d_model": 64}}}},
            "variants.b resolves to the same configuration as variants.a",
        ),
        ({"variants": {"m": {"optimizer": "lion", "muon_momentum": 0.9}}}, "muon_momentum"),
        ({"variants": {"h": {"head_lr_mult": 2.0}}}, "the head is the embedding"),
        ({"variants": {"p": {"max_positions": 64}}}, "read only with positions: learned"),
        ({"variants": {"z": {"z_loss": True}}}, "expected a number"),
        ({"samples": {"temperature": True}}, "expected a number"),
        ({"variants": {"p": {"precision": True}}}, "precision: Input should be 'auto'"),
    ],
)
def test_configurations_that_train_nothing_new_are_refused(top, message):
    with pytest.raises(ConfigError, match=message):
        build_study(study(**top))


def test_a_baseline_setting_unread_by_a_variant_is_not_that_variants_fault():
    """The baseline's Muon settings are read by the baseline; a variant that switches to AdamW
    inherits them unread, and that is fine: it did not write them."""
    baseline = {**BASELINE, "train": {**BASELINE["train"], "optimizer": "muon"}}
    baseline["train"]["muon_momentum"] = 0.9
    raw = study(baseline=baseline, variants={"adamw": {"optimizer": "adamw"}})
    assert [run.variant for run in build_study(raw).runs] == ["baseline", "adamw"]


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ({"same": {"description": "says so"}}, "variants.same changes nothing"),
        ({"watched": {"logger": "tensorboard"}}, "variants.watched changes nothing"),
        (
            {"a": {"learning_rate": 1.0e-3, "description": "one"},
             "b": {"learning_rate": 1.0e-3, "description": "two"}},
            "variants.b resolves to the same configuration as variants.a",
        ),
    ],
)  # fmt: skip
def test_what_documents_or_watches_a_run_is_no_configuration_of_its_own(variants, message):
    """config.effect.NOT_TRAINED, the same fields a resumed run may change."""
    with pytest.raises(ConfigError, match=message):
        build_study(study(variants=variants))


def test_a_sweep_point_that_differs_only_in_description_is_its_configuration():
    built = build_study(
        study(
            variants={"fast": {"learning_rate": 1.0e-3, "description": "faster"}},
            sweeps=[{"grid": {"learning_rate": [1.0e-3, 3.0e-3]}, "over": ["fast"]}],
        )
    )
    # fast at learning_rate 1e-3 is fast itself (its description aside): one run, not two
    assert sorted({r.variant for r in built.runs}) == [
        "baseline",
        "fast",
        "fast,learning_rate=0.003",
    ]


def test_every_variant_name_is_addressable_by_set():
    """A name may hold '.' and '=' (a directory name): --set matches it whole."""
    raw = study(
        variants={"lr=1e-3": {"learning_rate": 1.0e-3}, "v1.5": {"d_model": 64}, "v1": {}},
    )
    changed, _ = apply_study_overrides(
        raw, ["variants.lr=1e-3.batch_size=8", "variants.v1.5.n_layers=3", "variants.v1.n_layers=4"]
    )
    assert changed["variants"]["lr=1e-3"]["train"]["batch_size"] == 8
    assert changed["variants"]["v1.5"]["model"] == {"d_model": 64, "n_layers": 3}
    assert changed["variants"]["v1"]["model"] == {"n_layers": 4}


def test_a_generated_point_named_by_set_says_what_to_set_instead():
    raw = study(
        variants={"fast": {"learning_rate": 1.0e-3}},
        sweeps=[{"grid": {"batch_size": [2, 8]}, "over": ["fast"]}],
    )
    assert "fast,batch_size=8" in {r.variant for r in build_study(raw).runs}
    with pytest.raises(ConfigError, match=r"a point the study's sweeps, scale or tune generate"):
        apply_study_overrides(raw, ["variants.fast,batch_size=8.learning_rate=0.01"])


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ({"budget": 5}, "budget: expected a mapping (key: value) (got 5)"),
        ({"sweeps": [5]}, "sweeps.0: expected a mapping (key: value) (got 5)"),
        ({"scale": {"sizes": [5]}}, "scale.sizes.0: expected a mapping (key: value) (got 5)"),
        ({"tune": {"learning_rate": 5}}, "tune.learning_rate: expected a list or a mapping"),
        ({"data": {"tokenizer": 5}}, "data.tokenizer: expected text or a mapping"),
    ],
)
def test_a_wrong_type_is_named_in_the_files_terms_never_a_class(top, message):
    raw = study(**top)
    if "data" in top:
        raw["data"] = {"source": "builtin", **top["data"]}
    with pytest.raises(ConfigError) as raised:
        build_study(raw)
    assert message in str(raised.value)
    for name in ("BudgetConfig", "SweepConfig", "SizeConfig", "Spaced", "instance of"):
        assert name not in str(raised.value)
