"""Beyond one process: DDP under torchrun (gloo on CPU), --parallel, --nproc-per-node, Ray.

Every launched path must give the numbers a plain run gives: the same logged losses (to float
tolerance for DDP, whose gradient all-reduce sums in another order), summaries and samples.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import jsonl_corpus, run_cli, tiny_run_config, write_yaml
from safetensors.torch import load_file

from lmablate.config.study import load_study
from lmablate.errors import ConfigError, LmablateError
from lmablate.study.pools import available_cores, plan_slots
from lmablate.study.runner import run_study
from lmablate.training.distributed import World
from lmablate.training.loop import train
from lmablate.training.metrics import read_jsonl

TIMING = {"step_time", "tokens_per_s", "elapsed"}
SUMMARY_NUMBERS = ("status", "step", "final_val_loss", "final_train_loss", "tokens_seen")


def numbers(run_dir: Path) -> list[dict]:
    """Every logged number of a run that does not depend on the clock."""
    return [
        {k: v for k, v in r.items() if k not in TIMING}
        for r in read_jsonl(run_dir / "metrics.jsonl")
    ]


def study_numbers(directory: Path) -> dict[str, dict]:
    out = {}
    for run_dir in sorted(directory.glob("runs/*/seed-*")):
        summary = json.loads((run_dir / "summary.json").read_text())
        samples = json.loads((run_dir / "samples.json").read_text())
        out[str(run_dir.relative_to(directory))] = {
            "metrics": numbers(run_dir),
            "summary": {k: summary[k] for k in SUMMARY_NUMBERS},
            "samples": [s["generated"] for s in samples["samples"]],
        }
    return out


def assert_same_results(ours: dict[str, dict], theirs: dict[str, dict]) -> None:
    """Same runs, same logged numbers, summaries and samples. On a CPU a matrix multiply's
    sums split by thread, so runs on other thread counts may differ in the last bits: numbers
    are compared to 1e-5 (on the 2-core test machine they are bit-identical)."""
    assert ours.keys() == theirs.keys()
    for run, result in ours.items():
        expected = theirs[run]
        assert result["samples"] == expected["samples"], run
        records = zip(result["metrics"], expected["metrics"], strict=True)
        for ours_, theirs_ in [*records, (result["summary"], expected["summary"])]:
            assert ours_.keys() == theirs_.keys(), run
            for key, value in theirs_.items():
                if isinstance(value, float):
                    assert ours_[key] == pytest.approx(value, rel=1e-5), (run, key)
                else:
                    assert ours_[key] == value, (run, key)


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 -m lmablate ...`` (a free port each time)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return subprocess.run(
        [*command, "--nproc-per-node=2", "-m", "lmablate", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


# ------------------------------------------------------------------------- one run, 2 ranks


def test_batch_split_across_processes():
    assert World(0, 2).local_batch(8, 1) == (4, 1)
    assert World(0, 2).local_batch(8, 4) == (4, 2)  # micro-batches of 2, as on one process
    assert World(0, 4).local_batch(8, 4) == (2, 1)  # accumulation gives way to processes
    assert World(0, 2).local_batch(12, 3) == (6, 2)  # micro 4 does not divide 6: 3 does
    with pytest.raises(ConfigError, match=r"batch_size \(6\) must be divisible by .* \(4\)"):
        World(0, 4).local_batch(6, 1)
    rows = torch.arange(8)[:, None]
    assert World(1, 2).my_slice(rows).flatten().tolist() == [4, 5, 6, 7]


def test_two_gloo_processes_train_like_one(tmp_path, corpus, tokenizer_dir):
    """Loss trajectory and final weights of a 2-process DDP run (stopped and resumed halfway,
    with gradient accumulation) equal the 1-process run's with the same global batch."""
    settings = dict(batch_size=8, grad_accum_steps=4, max_steps=8, checkpoint_every=2)
    cfg = tiny_run_config(corpus, tokenizer_dir, model={"n_layers": 2}, device="cpu", **settings)
    train(cfg, tmp_path / "one", progress=False, log=lambda _: None)
    config = tmp_path / "run.json"
    config.write_text(json.dumps(cfg.model_dump(mode="json")))

    first = torchrun("train", str(config), "--out", "two", "--stop-at", "4", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = torchrun("train", str(config), "--out", "two", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stderr and "status        complete" in second.stdout
    assert second.stdout.count("status") == 1  # rank 0 alone reports

    one, two = numbers(tmp_path / "one"), numbers(tmp_path / "two")
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "grad_norm", "val_loss", "val_accuracy"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)
    weights = [
        load_file(next((tmp_path / run / "checkpoint").glob("step-*")) / "model.safetensors")
        for run in ("one", "two")
    ]
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=1e-4, atol=1e-6)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["environment"]["processes"] == 2 and summary["tokens_seen"] == 8 * 8 * 16


def test_a_batch_that_does_not_split_is_a_clear_error(tmp_path, corpus, tokenizer_dir):
    cfg = tiny_run_config(corpus, tokenizer_dir, batch_size=3, device="cpu")
    config = tmp_path / "run.json"
    config.write_text(json.dumps(cfg.model_dump(mode="json")))
    result = torchrun("train", str(config), "--out", "run", "--quiet", cwd=tmp_path)
    assert result.returncode != 0
    assert "error: train.batch_size (3) must be divisible by the number of processes (2)" in (
        result.stderr
    )
    assert "lmablate/training/" not in result.stderr  # our message, not our traceback


# ---------------------------------------------------------------------------- a whole study


def study_file(directory: Path, corpus: Path, tokenizer: Path) -> Path:
    return write_yaml(
        directory / "study.yaml",
        f"""\
        name: scaling
        description: A tiny study trained three ways
        data: {{source: local, path: {corpus}, tokenizer: {tokenizer}, num_documents: null}}
        baseline:
          model: {{d_model: 32, n_heads: 2, n_layers: 2, d_ff: 64}}
          train: {{batch_size: 4, seq_len: 32, learning_rate: 3.0e-3, warmup_steps: 2,
                  max_steps: 16, eval_every: 8, eval_tokens: 512, log_every: 2,
                  checkpoint_every: 4, device: cpu}}
        samples: {{prompts: [The function], max_new_tokens: 6}}
        variants:
          high_lr: {{learning_rate: 1.0e-2}}
          short_seq: {{seq_len: 16, batch_size: 8}}
        """,
    )


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, documents, tokenizer_dir):
    """The study trained the plain way (one run after another, in this process), on the
    thread count --parallel 2 gives each run on a 2-core machine."""
    root = tmp_path_factory.mktemp("scaling")
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, available_cores() // 2))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LMABLATE_CACHE", str(root / "cache"))
        env.setenv("HF_HUB_OFFLINE", "1")
        path = study_file(root, jsonl_corpus(root / "corpus.jsonl", documents), tokenizer_dir)
        run_study(load_study(path), root / "sequential", progress=False, log=lambda _: None)
    torch.set_num_threads(threads)
    return path, study_numbers(root / "sequential")


def test_parallel_runs_match_sequential_even_when_interrupted(tmp_path, sequential):
    path, expected = sequential
    out = tmp_path / "parallel"
    command = [sys.executable, "-m", "lmablate", "run", str(path), "--out", str(out)]
    process = subprocess.Popen(
        [*command, "--parallel", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = out / "runs/high_lr/seed-0/metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        not metrics.is_file() or metrics.read_text().count('"train"') < 2
    ):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # what a scheduler sends; Ctrl-C takes the same path
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Resume with:" in stderr and "--parallel 2" in stderr and "Traceback" not in stderr
    assert "[run 2/3] high_lr seed 0 (training on " in stderr
    assert not (out / "report").exists()

    result = subprocess.run([*command, "--parallel", "2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "3 of 3 runs complete" in result.stdout
    assert_same_results(study_numbers(out), expected)
    log = (out / "runs/baseline/seed-0/train.log").read_text()
    assert "-m lmablate train" in log and "status        complete" in log


def test_nproc_per_node_trains_each_run_with_torchrun(tmp_path, sequential):
    path, expected = sequential
    out = tmp_path / "ddp"
    result = run_cli(
        "run", str(path), "--out", str(out), "--only", "baseline", "--nproc-per-node", "2"
    )
    assert result.returncode == 0, result.stderr
    log = (out / "runs/baseline/seed-0/train.log").read_text()
    assert "torch.distributed.run --standalone --nproc-per-node=2" in log
    ours, theirs = study_numbers(out)["runs/baseline/seed-0"], expected["runs/baseline/seed-0"]
    for a, b in zip(ours["metrics"], theirs["metrics"], strict=True):
        for key in ("loss", "val_loss"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5)
    summary = json.loads((out / "runs/baseline/seed-0/summary.json").read_text())
    assert summary["environment"]["processes"] == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--parallel", "0"], "--parallel must be at least 1, not 0"),
        (["--nproc-per-node", "0"], "--nproc-per-node must be at least 1, not 0"),
        (["--parallel", "2", "--ray"], "--parallel and --ray do not combine"),
    ],
)
def test_launch_mistakes_exit_2(tmp_path, corpus, tokenizer_dir, capsys, flags, message):
    from lmablate.cli import main

    path = study_file(tmp_path, corpus, tokenizer_dir)
    assert main(["run", str(path), "--out", str(tmp_path / "out"), *flags]) == 2
    assert f"error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs").exists()  # refused before anything trained


def test_more_processes_than_gpus_is_refused(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(LmablateError, match=r"needs 4 GPUs \(one per process\); .* has 2"):
        plan_slots(2, 2, "cuda")
    slots = plan_slots(2, 1, "cuda")
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1"]


def test_ray_study_matches_sequential(tmp_path, sequential):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'lmablate[ray]')")
    path, expected = sequential
    out = tmp_path / "ray"
    # no address: a local Ray instance the size of this machine
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    only = ["--only", "baseline", "high_lr"]  # two runs: both at once on two cores
    result = run_cli("run", str(path), "--out", str(out), *only, "--ray", env=env)
    if result.returncode == 2 and "could not start or reach a Ray cluster" in result.stderr:
        pytest.skip(f"Ray cannot start here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    assert "submitted to Ray" in result.stderr and "2 of 2 runs complete" in result.stdout
    both = {k: v for k, v in expected.items() if "short_seq" not in k}
    assert_same_results(study_numbers(out), both)


def test_study_help_documents_the_launch_flags():
    from lmablate.cli import build_parser

    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    flags = {option for action in run._actions for option in action.option_strings}
    assert {"--parallel", "--nproc-per-node", "--ray"} <= flags
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for flag in ("--parallel", "--nproc-per-node", "--ray", "srun"):
        assert flag in readme
