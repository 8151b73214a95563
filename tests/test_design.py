"""Study design: sweeps expand into ordinary, validated, named variants."""

from __future__ import annotations

import pytest
import yaml

from lmablate.config.study import Spaced, build_study, format_value
from lmablate.errors import ConfigError

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
