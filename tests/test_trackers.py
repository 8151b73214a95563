"""Experiment trackers: TensorBoard event files written and read back; missing extras."""

from __future__ import annotations

import glob
import sys

import pytest
from helpers import jsonl_corpus, tiny_run_config

from lmablate.errors import LmablateError
from lmablate.training.loop import train
from lmablate.training.metrics import read_jsonl
from lmablate.training.trackers import run_name


def tiny(tmp_path, documents, tokenizer_dir, logger: str):
    corpus = jsonl_corpus(tmp_path / "corpus.jsonl", documents)
    return tiny_run_config(corpus, tokenizer_dir, logger=logger)


def test_tensorboard_receives_the_metrics_log(tmp_path, documents, tokenizer_dir):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "study" / "runs" / "baseline" / "seed-0"
    train(
        tiny(tmp_path, documents, tokenizer_dir, "tensorboard"),
        run_dir,
        progress=False,
        log=lambda _: None,
    )
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    records = read_jsonl(run_dir / "metrics.jsonl")
    train_loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    expected = [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]
    assert [s for s, _ in train_loss] == [s for s, _ in expected]
    assert [v for _, v in train_loss] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert [e.step for e in events.Scalars("eval/val_loss")] == [0, 3, 6]
    assert "study/baseline/seed-0" in str(events.Tensors("config/text_summary")[0])


def test_missing_tracker_package_is_a_clear_error_before_training(
    tmp_path, documents, tokenizer_dir, monkeypatch
):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what a missing package looks like
    with pytest.raises(
        LmablateError,
        match=r"wandb package is not installed: pip install "
        r"'lmablate\[wandb\]'",
    ):
        train(
            tiny(tmp_path, documents, tokenizer_dir, "wandb"),
            tmp_path / "run",
            progress=False,
            log=lambda _: None,
        )
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing started


def test_run_names():
    from pathlib import Path

    assert run_name(Path("results/seed/runs/high_lr/seed-2")) == "seed/high_lr/seed-2"
    assert run_name(Path("runs/builtin")) == "builtin"


def test_wandb_offline_run_receives_the_records(tmp_path, documents, tokenizer_dir, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "study" / "runs" / "high_lr" / "seed-1"
    train(
        tiny(tmp_path, documents, tokenizer_dir, "wandb"),
        run_dir,
        progress=False,
        log=lambda _: None,
    )
    files = glob.glob(str(run_dir / "wandb" / "offline-run-*-study-high_lr-seed-1" / "*.wandb"))
    assert len(files) == 1
    with open(files[0], "rb") as f:
        content = f.read()
    for needle in (b"study/high_lr/seed-1", b"train/loss", b"eval/val_loss", b"learning_rate"):
        assert needle in content, needle
