"""Checkpoints: weights and trainer state, verified by checksums, written atomically.

Layout inside a run directory::

    checkpoint/step-00000500/
        model.safetensors   the weights (a tied matrix is stored once)
        trainer.pt          optimizer, gradient scaler, RNG states, loop state
        meta.json           step and the sha256 of each file above; written last

A checkpoint is built in a temporary directory and renamed into place, so a kill at any instant
leaves every earlier checkpoint intact and never a half-written one under a final name. The
newest ``keep`` checkpoints are kept; loading takes the newest one whose checksums verify and
reports any that do not. Nothing executable is unpickled: weights come from safetensors and
trainer state from ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from lmablate.analysis.rundata import read_run_file
from lmablate.config.keys import read_run_config
from lmablate.config.run import RunConfig
from lmablate.data.tokenizers import Tokenizer, load_tokenizer
from lmablate.errors import LmablateError
from lmablate.model.counts import resolve_vocab_size
from lmablate.model.transformer import LM

CHECKPOINT_DIR = "checkpoint"
FILES = ("model.safetensors", "trainer.pt")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rng_state() -> dict[str, Any]:
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            np_kind,
            torch.from_numpy(np_keys.astype(np.int64)),
            np_pos,
            np_has_gauss,
            np_gauss,
        ],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first (temporary ones excluded)."""
    root = run_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit())


def verify(path: Path) -> str | None:
    """Why the checkpoint at ``path`` is unusable, or None when it is intact."""
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        return "meta.json is missing"
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        return f"meta.json is unreadable ({exc})"
    for name in FILES:
        if not (path / name).is_file():
            return f"{name} is missing"
        if _sha256(path / name) != meta["sha256"].get(name):
            return f"{name} does not match its checksum"
    return None


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loop_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    root = run_dir / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".step-*"):  # a killed save's leftovers (the run dir is locked)
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_state(),
                "loop": loop_state,
            },
            tmp / "trainer.pt",
        )
        meta = {"step": step, "sha256": {name: _sha256(tmp / name) for name in FILES}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if final.exists():  # the same step saved again (e.g. a stop right after a save)
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_valid(run_dir: Path, warn: Callable[[str], None] = lambda _: None) -> Path | None:
    """The newest checkpoint that verifies; each one skipped on the way is reported."""
    for path in reversed(checkpoints(run_dir)):
        problem = verify(path)
        if problem is None:
            return path
        warn(f"checkpoint {path} is corrupt ({problem}); falling back to an earlier one")
    return None


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> tuple[int, dict[str, Any]]:
    """Restore everything saved at ``path``; returns (step, loop state)."""
    load_model(model, path / "model.safetensors", strict=True, device=str(device))
    # RNG states must stay on the CPU; the optimizer moves its state to each parameter's device
    state = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    meta = json.loads((path / "meta.json").read_text())
    return meta["step"], state["loop"]


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[LM, Tokenizer, RunConfig, int]:
    """A run's model (newest valid weights, eval mode), tokenizer, config and weights' step."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    if not (run_dir / "tokenizer" / "tokenizer.json").is_file():
        raise LmablateError(f"{run_dir} has no tokenizer/ (was the run started?)")
    tokenizer = load_tokenizer(str(run_dir / "tokenizer"))
    model = LM(cfg.model, resolve_vocab_size(cfg.model, tokenizer.vocab_size))
    step = load_weights(model, run_dir, device)
    return model.to(device).eval(), tokenizer, cfg, step


def _no_weights(run_dir: Path) -> str:
    """Why a run has no weights to load, in the terms of what its directory holds."""
    saved = checkpoints(run_dir)
    if saved:
        problems = "; ".join(f"{p.name}: {verify(p)}" for p in saved)
        return (
            f"{run_dir}: every checkpoint fails its checks ({problems}); the weights are "
            "damaged, so retrain the run"
        )
    summary = read_run_file(run_dir, "summary.json") or {}
    if summary.get("status") == "diverged":
        return (
            f"{run_dir} diverged at step {summary.get('step')}, before its first checkpoint, "
            "so it has no weights; lower the learning rate and retrain, or checkpoint earlier "
            "(train.checkpoint_every)"
        )
    if summary.get("status") == "failed":
        return f"{run_dir} failed before its first checkpoint ({summary.get('message')})"
    if not (run_dir / "config.json").is_file():
        return f"{run_dir} is not a run directory (no config.json); give a run's --out directory"
    return f"{run_dir} has no checkpoint yet: train it first (lmablate train ... --out {run_dir})"


def load_weights(model: torch.nn.Module, run_dir: Path, device: str = "cpu") -> int:
    """Load the newest valid weights of a run into ``model``; returns their step."""
    path = latest_valid(run_dir)
    if path is None:
        raise LmablateError(_no_weights(run_dir))
    load_model(model, path / "model.safetensors", strict=True, device=device)
    return json.loads((path / "meta.json").read_text())["step"]
