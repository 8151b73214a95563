"""Faults a long unattended study meets: out of memory, a full disk, corrupt logs, bad names."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_run_config

from lmablate.analysis.rundata import read_jsonl
from lmablate.config.study import load_study
from lmablate.errors import ConfigError, LmablateError
from lmablate.study.runner import run_study
from lmablate.training.loop import train
from lmablate.training.summary import write_json_atomic


def tiny_study(tmp_path: Path, corpus: Path, tokenizer_dir: Path, name: str = "faults") -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(f"""\
name: {name}
data: {{source: local, path: {corpus}, tokenizer: {tokenizer_dir}, num_documents: null}}
baseline:
  model: {{d_model: 32, n_heads: 2, n_layers: 1, d_ff: 64}}
  train: {{batch_size: 4, seq_len: 16, max_steps: 6, warmup_steps: 1, eval_every: 3,
          eval_tokens: 128, log_every: 2}}
variants:
  wide: {{d_model: 48, n_heads: 2}}
  fast: {{learning_rate: 1.0e-2}}
samples: {{prompts: [Hi], max_new_tokens: 3}}
""")
    return path


def test_out_of_memory_fails_one_run_and_the_study_goes_on(
    tmp_path, corpus, tokenizer_dir, monkeypatch
):
    from lmablate.model.transformer import LM

    forward = LM.forward

    def oom_when_wide(self, *args, **kwargs):
        if self.cfg.d_model == 48 and self.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LM, "forward", oom_when_wide)
    outcome = run_study(
        load_study(tiny_study(tmp_path, corpus, tokenizer_dir)),
        tmp_path / "out",
        progress=False,
        log=lambda _: None,
    )
    assert outcome.statuses == {
        "runs/baseline/seed-0": "complete",
        "runs/wide/seed-0": "failed",
        "runs/fast/seed-0": "complete",
    }
    summary = json.loads((tmp_path / "out/runs/wide/seed-0/summary.json").read_text())
    assert "out of memory" in summary["message"] and "grad_accum_steps" in summary["message"]
    report = (tmp_path / "out/report/research_report.md").read_text()
    assert "| wide | 0 | failed | out of memory" in report


def test_a_full_disk_names_the_file_and_keeps_the_good_one(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text('{"status": "complete"}\n')

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(LmablateError, match=rf"could not write {target}: No space left"):
        write_json_atomic(target, {"status": "failed"})
    monkeypatch.undo()
    assert target.read_text() == '{"status": "complete"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left


def test_a_corrupt_metrics_line_is_skipped_and_reported(tmp_path, corpus, tokenizer_dir):
    cfg = tiny_run_config(corpus, tokenizer_dir)
    train(cfg, tmp_path / "run", progress=False, log=lambda _: None, stop_at=4)
    metrics = tmp_path / "run" / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    lines[1] = '{"kind": "train", "st\x00\x00garbage\n'
    metrics.write_text("".join(lines))
    with pytest.warns(UserWarning, match="metrics.jsonl:2: unreadable record skipped"):
        records = read_jsonl(metrics)
    assert len(records) == len(lines) - 1
    with pytest.warns(UserWarning, match="unreadable record skipped"):
        result = train(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    assert result.status == "complete"


@pytest.mark.parametrize("name", ["../../etc", "a/b", "..", "/abs"])
def test_a_study_name_cannot_leave_its_output_directory(tmp_path, corpus, tokenizer_dir, name):
    path = tiny_study(tmp_path, corpus, tokenizer_dir, name=json.dumps(name))
    with pytest.raises(ConfigError, match="must be letters, digits"):
        load_study(path)
