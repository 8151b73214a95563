"""The benchmark scripts run and print their ratios (on tiny settings: a smoke test, no timing)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize(
    ("script", "args", "ratio_line"),
    [
        (
            "bench_train.py",
            ["--small", "--rounds", "1", "--seq-len", "64"],
            "vs transformers Llama",
        ),
        ("bench_data.py", ["--documents", "40", "--rounds", "1"], "batched vs naive"),
        ("bench_eval.py", ["--eval-tokens", "256", "--rounds", "1"], "vectorized vs naive"),
        (
            "bench_generate.py",
            ["--rounds", "1", "--new-tokens", "2"],
            "KV cache vs transformers",
        ),
    ],
)
def test_benchmark_prints_its_ratio(script, args, ratio_line, tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "LMABLATE_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert ratio_line in result.stdout
    assert "x (target" in result.stdout
    if script == "bench_train.py":  # the optimizer table, each relative to AdamW
        for kind in ("adamw", "muon", "lion", "sgd"):
            assert re.search(rf"^  {kind} +[\d.]+ ms/step +[\d.]+x AdamW$", result.stdout, re.M)


def test_component_benchmark_prints_each_choice_relative_to_the_default(tmp_path):
    args = ["--small", "--rounds", "1", "--only", "qk_norm", "mlp relu2"]
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_components.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.endswith("x")]
    assert [row.split("  ")[0] for row in rows] == ["qk_norm", "mlp relu2"]


def test_the_coordinate_check_prints_a_row_per_parametrization_and_layer(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "coord_check.py"),
            "--widths",
            "16",
            "32",
            "--steps",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split()[:2] for line in result.stdout.splitlines()[2:]]
    assert rows == [[p, k] for p in ("sp", "mup") for k in ("block", "block", "logits")]
