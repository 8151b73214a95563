"""Experiment trackers: the metrics log's records, mirrored to TensorBoard or Weights & Biases.

metrics.jsonl is always written (see ``metrics.MetricsLog``); ``train.logger`` adds one tracker
that receives the same records under the run name ``<study>/<variant>/seed-<k>`` (or the run
directory's name outside a study), plus the resolved config. Both are optional extras: a
missing package is a clear error before training starts, never a crash mid-run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from lmablate.errors import LmablateError

INSTALL = {
    "tensorboard": "pip install 'lmablate[tensorboard]'",
    "wandb": "pip install 'lmablate[wandb]'",
}


class Tracker(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def run_name(run_dir: Path) -> str:
    """``<study>/<variant>/seed-<k>`` for a study's run, else the directory's name."""
    if run_dir.parent.parent.name == "runs":
        return f"{run_dir.parents[2].name}/{run_dir.parent.name}/{run_dir.name}"
    return run_dir.name


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    prefix = record["kind"]
    return {
        f"{prefix}/{key}": float(value)
        for key, value in record.items()
        if key not in ("kind", "step") and isinstance(value, int | float)
    }


class TensorBoardTracker:
    """Event files under ``RUN_DIR/tensorboard`` (point ``tensorboard --logdir`` at a study)."""

    def __init__(self, run_dir: Path, name: str, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text(
            "config", f"run {name}\n\n```json\n{json.dumps(config, indent=2)}\n```"
        )

    def log(self, record: dict[str, Any]) -> None:
        for tag, value in _scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A Weights & Biases run (``WANDB_MODE=offline`` works without an account)."""

    def __init__(self, run_dir: Path, name: str, config: dict[str, Any], project: str) -> None:
        import wandb

        self.run = wandb.init(
            project=project,
            name=name,
            config=config,
            dir=str(run_dir),
            id=name.replace("/", "-"),
            resume="allow",
            mode=os.environ.get("WANDB_MODE"),
        )

    def log(self, record: dict[str, Any]) -> None:
        self.run.log(_scalars(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


def check_available(logger: str) -> None:
    """Fail before training if the chosen tracker's package is missing."""
    if logger == "none":
        return
    module = "tensorboard" if logger == "tensorboard" else "wandb"
    try:
        __import__(module)
    except ImportError:
        raise LmablateError(
            f"train.logger is {logger!r} but the {module} package is not "
            f"installed: {INSTALL[logger]}"
        ) from None


def make_tracker(
    logger: str, run_dir: Path, config: dict[str, Any], project: str
) -> Tracker | None:
    check_available(logger)
    name = run_name(run_dir)
    if logger == "tensorboard":
        return TensorBoardTracker(run_dir, name, config)
    if logger == "wandb":
        return WandbTracker(run_dir, name, config, project)
    return None
