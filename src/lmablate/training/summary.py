"""The run files that say what a run is and how it ended: ``config.json`` (written first,
checked on resume) and ``summary.json`` (written last and atomically: the run is finished).

A write goes to a temporary file that is then renamed, so a full disk or a kill never leaves a
half-written file under its final name, and a failed write never replaces a good one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmablate.analysis.rundata import read_run_file
from lmablate.config.effect import trained_part
from lmablate.config.keys import with_defaults
from lmablate.config.run import RunConfig
from lmablate.data.cache import digest
from lmablate.errors import LmablateError
from lmablate.hardware import environment, peak_memory_bytes
from lmablate.model.counts import count_parameters
from lmablate.training.metrics import mfu, smoothed_train_loss

FINISHED = ("complete", "diverged")  # a rerun of such a run does nothing


@dataclass
class RunResult:
    status: str  # complete | diverged | failed | stopped (at --stop-at) | interrupted (signal)
    step: int
    run_dir: Path
    summary: dict[str, Any] | None = None


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A run's summary.json; None when there is none or it is damaged (then with a warning
    naming it): the run counts as unfinished and resumes from its checkpoints."""
    return read_run_file(run_dir, "summary.json")


def write_json_atomic(path: Path, value: Any) -> None:
    """Write aside, then rename: a failed write (a full disk) never replaces a good file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(value, indent=2, allow_nan=True) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LmablateError(f"could not write {path}: {exc.strerror or exc}") from exc


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
    return out


def _only_a_failed_start(run_dir: Path) -> bool:
    """A run that failed before its first step (a device that is not there, a shape the
    machine cannot hold) trained nothing: another config may take its directory."""
    summary = read_summary(run_dir) or {}
    trained = (run_dir / "metrics.jsonl").is_file() or (run_dir / "checkpoint").is_dir()
    return summary.get("status") == "failed" and not trained


def write_or_check_config(run_dir: Path, cfg: RunConfig) -> None:
    """Write ``config.json``, or refuse if the directory holds a run of another config."""
    check_config(run_dir, cfg)
    write_json_atomic(run_dir / "config.json", cfg.model_dump(mode="json"))


def check_config(run_dir: Path, cfg: RunConfig) -> None:
    """Refuse if the directory holds a run (finished or not) of another config."""
    resolved = cfg.model_dump(mode="json")
    path = run_dir / "config.json"
    if path.is_file() and not _only_a_failed_start(run_dir):
        # what only documents or watches a run (config.effect.NOT_TRAINED) is no conflict
        old = _flatten(trained_part(with_defaults(json.loads(path.read_text()))))
        new = _flatten(trained_part(resolved))
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if changed:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
            raise LmablateError(
                f"{run_dir} holds a run with a different config ({details}); resume it with "
                "its own config, or train into a new --out directory"
            )


def build_summary(
    *,
    status: str,
    step: int,
    message: str | None,
    cfg: RunConfig,
    records: list[dict[str, Any]],
    loop: dict[str, Any],
    vocab_size: int,
    flops_per_token: int,
    peak: float | None,
    device: torch.device,
    precision: str,
    val: Any,
    train_tokens: int,
    data_key: str,
    tokenizer: str,
    data_meta: dict[str, Any],
    parameter_groups: dict[str, Any] | None = None,
    test: dict[str, Any] | None = None,
    processes: int = 1,
    references: dict[str, Any] | None = None,
    mixture: dict[str, Any] | None = None,
) -> dict[str, Any]:
    tc = cfg.train
    test_references = (test or {}).get("references")
    test = {k: v for k, v in test.items() if k != "references"} if test else None
    evals = [r for r in records if r["kind"] == "eval" and r["step"] <= step]
    finite = [r for r in evals if math.isfinite(r["val_loss"])]
    best = min(finite, key=lambda r: r["val_loss"]) if finite else None
    final = evals[-1] if status == "complete" and evals else None
    tokens_seen = step * tc.batch_size * tc.seq_len
    # metrics.jsonl times every step as it ran; the summary leaves compilation out
    train_time = loop["train_time_s"] - loop.get("compile_s", 0.0)
    timed_tokens = tokens_seen - loop.get("compile_steps", 0) * tc.batch_size * tc.seq_len
    tokens_per_s = timed_tokens / train_time if train_time > 0 and timed_tokens > 0 else None
    achieved = tokens_per_s * flops_per_token if tokens_per_s else None
    summary: dict[str, Any] = {
        "status": status,
        "message": message,
        "step": step,
        "max_steps": tc.max_steps,
        "diverged_at_step": step if status == "diverged" else None,
        "final_val_loss": final["val_loss"] if final else None,
        "final_val_bpb": final["val_bpb"] if final else None,
        "final_val_ppl": final["val_ppl"] if final else None,
        "final_val_accuracy": final["val_accuracy"] if final else None,
        "final_val_top5_accuracy": final["val_top5_accuracy"] if final else None,
        "final_val_confidence": final["val_confidence"] if final else None,
        "final_val_entropy": final["val_entropy"] if final else None,
        "final_test_loss": test["test_loss"] if test else None,
        "final_test_bpb": test["test_bpb"] if test else None,
        "final_test_accuracy": test["test_accuracy"] if test else None,
        "final_val_sets": final.get("val_sets") if final else None,
        "final_test_sets": test.get("test_sets") if test else None,
        "test": test,
        "best_val_loss": best["val_loss"] if best else None,
        "best_val_step": best["step"] if best else None,
        "last_val_loss": evals[-1]["val_loss"] if evals else None,
        "final_train_loss": smoothed_train_loss([r for r in records if r["step"] <= step]),
        "tokens_seen": tokens_seen,
        "epochs": tokens_seen / train_tokens,
        "mixture": mixture,
        "params": count_parameters(cfg.model, vocab_size),
        "vocab_size": vocab_size,
        "optimizer": tc.optimizer,
        "parameter_groups": parameter_groups,
        "flops_per_token": flops_per_token,
        "total_flops": flops_per_token * tokens_seen,
        "wall_time_s": loop["elapsed_s"],
        "train_time_s": train_time,
        "compile_s": loop.get("compile_s"),
        "tokens_per_s": tokens_per_s,
        "achieved_flops_per_s": achieved,
        "peak_flops_per_s": peak,
        "mfu": mfu(achieved, peak),
        "peak_memory_bytes": peak_memory_bytes(device),
        "precision": precision,
        "device": str(device),
        "eval": {
            "targets": val.n_targets,
            "bytes": val.n_bytes,
            "targets_digest": digest(val.targets[val.targets >= 0].tolist()),
        },
        "tokenizer": tokenizer,
        # count models of the training split on the same targets (data/references.py)
        "reference_losses": {
            **({"val": references} if references else {}),
            **({"test": test_references} if test_references else {}),
        },
        "data": data_meta,
        "config_hash": digest(cfg.model_dump(mode="json")),
        "data_cache_key": data_key,
        "environment": {**environment(device), "processes": processes},
    }
    return summary


def summary_lines(summary: dict[str, Any], run_dir: Path) -> str:
    """A finished run's summary as the aligned lines ``lmablate train`` prints."""

    def fmt(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    mfu = summary.get("mfu")
    rows = [
        ("status", f"{summary['status']} at step {summary['step']:,}"),
        (
            "val loss",
            f"{fmt(summary['final_val_loss'], '.4f')} (best "
            f"{fmt(summary['best_val_loss'], '.4f')} at step {summary['best_val_step']})",
        ),
        ("val bpb", fmt(summary["final_val_bpb"], ".4f")),
        (
            "val accuracy",
            f"{fmt(summary['final_val_accuracy'], '.3f')} (top-5 "
            f"{fmt(summary['final_val_top5_accuracy'], '.3f')})",
        ),
        (
            "train loss",
            f"{fmt(summary['final_train_loss'], '.4f')} (mean of the last 10% of logged steps)",
        ),
        ("tokens", f"{summary['tokens_seen']:,} ({summary['epochs']:.2f} epochs)"),
        (
            "throughput",
            f"{fmt(summary['tokens_per_s'], ',.0f')} tokens/s, "
            f"{fmt((summary['achieved_flops_per_s'] or 0) / 1e9, ',.1f')} GFLOP/s, "
            f"MFU {'n/a (peak unknown)' if mfu is None else format(mfu, '.1%')}",
        ),
        ("wall time", f"{summary['wall_time_s']:.1f} s"),
        ("run dir", str(run_dir)),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
