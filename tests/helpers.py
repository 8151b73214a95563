"""Helpers for tests that drive the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Run ``python -m lmablate`` in a fresh process (what a user's shell does)."""
    return subprocess.run(
        [sys.executable, "-m", "lmablate", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def jsonl_corpus(path: Path, documents: list[str], field: str = "text") -> Path:
    """Write ``documents`` as a JSON Lines corpus (one record per document) and return its path."""
    path.write_text(
        "".join(json.dumps({field: doc, "id": i}) + "\n" for i, doc in enumerate(documents))
    )
    return path


def tiny_run_config(
    corpus: Path, tokenizer: Path, *, model: dict | None = None, data: dict | None = None, **train
):
    """A run config small enough to train in a second on a CPU; keyword arguments override
    the train section."""
    from lmablate.config.keys import validate_run_config

    return validate_run_config(
        {
            "model": {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, **(model or {})},
            "train": {
                "batch_size": 4,
                "seq_len": 16,
                "max_steps": 6,
                "warmup_steps": 1,
                "eval_every": 3,
                "eval_tokens": 128,
                "log_every": 2,
                **train,
            },
            "data": {
                "source": "local",
                "path": str(corpus),
                "tokenizer": str(tokenizer),
                "num_documents": None,
                **(data or {}),
            },
        }
    )
