"""``lmablate status``: one line per run of a study directory, read from the run
directories alone (no torch)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lmablate.analysis.rundata import load_study_dir


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def study_status(directory: Path) -> list[dict[str, Any]]:
    """One row per run of a study directory: its state and headline numbers."""
    study = load_study_dir(directory)
    rows = []
    for run in study.runs:
        summary = run.summary or {}
        last = run.records[-1]["step"] if run.records else 0
        max_steps = (run.config or {}).get("train", {}).get("max_steps")
        rows.append(
            {
                "variant": run.variant,
                "seed": run.seed,
                "status": run.status,
                "step": summary.get("step", last),
                "max_steps": max_steps,
                "final_val_loss": summary.get("final_val_loss"),
                "wall_time_s": summary.get("wall_time_s"),
                "message": summary.get("message"),
            }
        )
    return rows


def print_status(rows: list[dict[str, Any]], file: Any = sys.stdout) -> None:
    header = f"{'variant':<16} {'seed':>4}  {'status':<12} {'step':>13}  {'val loss':>8}  wall"
    print(header, file=file)
    for row in rows:
        steps = f"{row['step']}/{row['max_steps']}" if row["max_steps"] else "-"
        loss = f"{row['final_val_loss']:.4f}" if row["final_val_loss"] is not None else "-"
        wall = duration(row["wall_time_s"]) if row["wall_time_s"] else "-"
        line = (
            f"{row['variant']:<16} {row['seed']:>4}  {row['status']:<12} {steps:>13}  "
            f"{loss:>8}  {wall}"
        )
        if row["message"]:
            line += f"  ({row['message']})"
        print(line, file=file)
