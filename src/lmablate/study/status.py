"""``lmablate status``: one line per run of a study directory, read from the run
directories alone (no torch)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lmablate.analysis.rundata import load_study_dir, scan_runs
from lmablate.errors import LmablateError


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def study_status(directory: Path) -> tuple[list[dict[str, Any]], str | None]:
    """One row per run of a study directory, its state and headline numbers; and, when
    study.yaml is damaged, what is wrong with it (the rows are then the run directories
    found under runs/)."""
    try:
        runs, problem = load_study_dir(directory).runs, None
    except LmablateError as exc:
        if not (directory / "study.yaml").is_file() or not (directory / "runs").is_dir():
            raise
        runs, problem = scan_runs(directory), str(exc)
    rows = []
    for run in runs:
        summary = run.summary or {}
        last = run.records[-1]["step"] if run.records else 0
        max_steps = (run.config or {}).get("train", {}).get("max_steps")
        rows.append(
            {
                "variant": run.variant,
                "seed": run.seed,
                "status": "damaged" if run.damaged else run.status,
                "step": summary.get("step", last),
                "max_steps": max_steps,
                "final_val_loss": summary.get("final_val_loss"),
                "wall_time_s": summary.get("wall_time_s"),
                "message": "; ".join(run.damaged) or summary.get("message"),
            }
        )
    return rows, problem


def print_status(rows: list[dict[str, Any]], file: Any = None) -> None:
    file = file or sys.stdout  # read now: a caller may have redirected it
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
