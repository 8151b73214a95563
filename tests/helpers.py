"""Helpers for tests that drive the command line."""

from __future__ import annotations

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
