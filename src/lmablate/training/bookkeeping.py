"""The training loop's bookkeeping: what is due at a step, the steps since the last train
record, and stop requests (Ctrl-C, SIGTERM, ``--stop-at``).

None of it touches the model; it decides when the loop logs, evaluates, checkpoints and stops.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from typing import Any

import torch

from lmablate.config.run import TrainConfig


@dataclass(frozen=True)
class Due:
    """What the loop does after optimizer step ``step`` (1-based: the steps done so far)."""

    log: bool
    eval: bool
    save: bool
    stop: bool

    @classmethod
    def at(cls, step: int, cfg: TrainConfig, stop: bool) -> Due:
        """Evaluations and checkpoints on their intervals and at the end; a train record at
        every evaluation too; a checkpoint before any stop."""
        last = step == cfg.max_steps
        evaluate = step % cfg.eval_every == 0 or last
        return cls(
            log=step % cfg.log_every == 0 or evaluate,
            eval=evaluate,
            save=step % cfg.checkpoint_every == 0 or last or stop,
            stop=stop,
        )

    @property
    def anything(self) -> bool:
        return self.log or self.save


@dataclass
class Interval:
    """Training steps since the last train record: summed loss and z-loss term (on device),
    count, time.

    Carried through checkpoints, so a stop between two logging steps changes nothing that is
    logged."""

    loss: torch.Tensor
    z_loss: torch.Tensor
    steps: int = 0
    time_s: float = 0.0

    @classmethod
    def restore(cls, state: dict[str, Any] | None, device: torch.device) -> Interval:
        if state is None:
            return cls(torch.zeros((), device=device), torch.zeros((), device=device))
        z_loss = state.get("z_loss", torch.zeros(()))  # absent in checkpoints before z-loss
        return cls(state["loss"].to(device), z_loss.to(device), state["steps"], state["time_s"])

    def state(self) -> dict[str, Any]:
        return {
            "loss": self.loss.cpu(),
            "z_loss": self.z_loss.cpu(),
            "steps": self.steps,
            "time_s": self.time_s,
        }

    def add(self, loss: torch.Tensor, z_loss: torch.Tensor) -> None:
        self.loss += loss
        self.z_loss += z_loss
        self.steps += 1

    def record(
        self, step: int, tokens_per_step: int, lr: float, grad_norm: float, z_loss: bool = False
    ) -> dict:
        """The train record; with ``z_loss`` its term's mean beside the cross-entropy."""
        record = {
            "kind": "train",
            "step": step,
            "tokens_seen": step * tokens_per_step,
            "loss": float(self.loss) / self.steps,  # mean over the steps since the last record
            "lr": lr,
            "grad_norm": grad_norm,  # pre-clip norm of the logged step
            "step_time": self.time_s / self.steps,
            "tokens_per_s": self.steps * tokens_per_step / self.time_s,
        }
        if z_loss:
            record["z_loss"] = float(self.z_loss) / self.steps
        return record


class StopRequest:
    """SIGINT/SIGTERM ask the loop to checkpoint and stop at the next step boundary.

    A second Ctrl-C stops at once (KeyboardInterrupt), for a user who cannot wait.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
