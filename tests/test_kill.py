"""SIGKILL at random moments: rerunning finishes the study with an uninterrupted study's numbers.

The kills land anywhere: during start-up, data preparation, a training step, a checkpoint
write, sampling, or the report. Nothing gets a chance to clean up, so this checks that every
file that marks progress is written atomically and every reader tolerates what a kill leaves.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmablate.config.study import load_study
from lmablate.study.runner import run_study

TIMING = {"step_time", "tokens_per_s", "elapsed"}
KILLS = int(os.environ.get("LMABLATE_KILL_POINTS", "20"))  # more: set the variable


def numbers(directory: Path) -> dict[str, object]:
    """Everything a study computed that does not depend on the clock."""
    out: dict[str, object] = {}
    for run in sorted(directory.glob("runs/*/seed-*")):
        name = str(run.relative_to(directory))
        lines = (run / "metrics.jsonl").read_text().splitlines()
        out[f"{name}/metrics"] = [
            {k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines
        ]
        summary = json.loads((run / "summary.json").read_text())
        out[f"{name}/summary"] = {
            k: summary[k] for k in ("status", "final_val_loss", "final_train_loss", "tokens_seen")
        }
        samples = json.loads((run / "samples.json").read_text())
        out[f"{name}/samples"] = [s["new_token_ids"] for s in samples["samples"]]
    return out


@pytest.mark.slow
def test_random_sigkills_then_rerun_equal_an_uninterrupted_study(
    tmp_path, documents, tokenizer_dir
):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    study = tmp_path / "study.yaml"
    study.write_text(f"""\
name: killed
data: {{source: local, path: {corpus}, tokenizer: {tokenizer_dir}, num_documents: null}}
baseline:
  model: {{d_model: 32, n_heads: 2, n_layers: 2, d_ff: 64}}
  train: {{batch_size: 4, seq_len: 32, max_steps: 30, warmup_steps: 2, eval_every: 10,
          eval_tokens: 256, log_every: 5, checkpoint_every: 5, learning_rate: 3.0e-3}}
variants:
  high_lr: {{learning_rate: 1.0e-2}}
  short_seq: {{seq_len: 16}}
samples: {{prompts: [The function, A class], max_new_tokens: 5}}
""")
    run_study(load_study(study), tmp_path / "whole", progress=False, log=lambda _: None)

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "lmablate", "run", str(study), "--out", str(out), "--quiet"]
    rng = random.Random(0)
    kills = attempts = 0
    while kills < KILLS:
        attempts += 1
        assert attempts < 3 * KILLS, "the study kept finishing before it could be killed"
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.3, 5.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        _, stderr = process.communicate(timeout=120)
        assert b"Traceback" not in stderr, stderr.decode()[-3000:]

    final = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    assert numbers(out) == numbers(tmp_path / "whole")
    assert (out / "report" / "research_report.md").is_file()
    assert not list(out.glob("runs/*/seed-*/checkpoint/.step-*"))  # no leftovers after success
