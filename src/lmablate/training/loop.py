"""Training one run: ``train(cfg, run_dir)`` from a config to a complete run directory.

The loop is one readable function around pure helpers (``lr_at``, ``build_optimizer``,
``train_step``). What it writes is the run-directory contract (see DESIGN.md)::

    config.json      the resolved run config
    tokenizer/       the tokenizer the run used (AutoTokenizer-loadable)
    metrics.jsonl    one record per logged step ("kind": "train") and per evaluation ("eval")
    checkpoint/      step-NNNNNNNN/ directories (see checkpoint.py)
    summary.json     written last and atomically: the run is finished (complete, diverged
                     or failed)

Recipe: AdamW with decoupled weight decay on weight matrices only, linear warmup then cosine
decay to ``min_lr_ratio * learning_rate``, gradient clipping on the global norm (the pre-clip
norm is logged), gradient accumulation, autocast mixed precision with a gradient scaler for
fp16. ``seed`` fixes the initialization and ``data_seed`` the batch order, independently.

Honesty rules: timing synchronizes the device before reading the clock and the host only syncs
at logging steps; a non-finite loss stops the run as ``diverged`` (no crash, nothing logged is
lost, no non-finite weights are checkpointed); a resumed run replays exactly the batches it
would have seen, so on CPU its losses are bit-identical to an uninterrupted run's.

Under torchrun (see ``distributed``) every process runs this loop on its own slice of each
global batch, with the model wrapped in DistributedDataParallel; the logged loss is the mean
over processes and rank 0 alone writes the run directory, so the files are those of one process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmablate.config.run import RunConfig, TrainConfig
from lmablate.data import PreparedData, TrainBatches, prepare, validation_set
from lmablate.data.cache import digest
from lmablate.errors import LmablateError
from lmablate.hardware import (
    autocast,
    environment,
    peak_flops,
    peak_memory_bytes,
    resolve_device,
    resolve_precision,
    synchronize,
    tune_allocator,
)
from lmablate.locks import exclusive
from lmablate.model.transformer import (
    LM,
    count_parameters,
    resolve_vocab_size,
    training_flops_per_token,
)
from lmablate.training.checkpoint import checkpoints, latest_valid, load_checkpoint, save_checkpoint
from lmablate.training.distributed import World
from lmablate.training.metrics import (
    MetricsLog,
    evaluate,
    mfu,
    read_jsonl,
    smoothed_train_loss,
    truncate_jsonl,
)
from lmablate.training.trackers import check_available, make_tracker

FINISHED = ("complete", "diverged")  # a rerun of such a run does nothing
# fields that change how a run is watched, not what it computes: changing them is no conflict
OBSERVATION_ONLY = {"train.logger", "train.wandb_project"}


@dataclass
class RunResult:
    status: str  # complete | diverged | failed | stopped (at --stop-at) | interrupted (signal)
    step: int
    run_dir: Path
    summary: dict[str, Any] | None = None


# ----------------------------------------------------------------------------- pure helpers


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer update ``step`` (0-based).

    Linear warmup: update s < warmup_steps uses lr * (s + 1) / warmup_steps, so the first update
    is not wasted at 0 and update warmup_steps - 1 reaches the peak. Then cosine decay from the
    peak at s = warmup_steps to min_lr_ratio * lr at s = max_steps.
    """
    peak, floor = cfg.learning_rate, cfg.learning_rate * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / (cfg.max_steps - cfg.warmup_steps))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (ndim >= 2) only, never on norm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        fused=device.type == "cuda",  # one kernel for the whole update on GPUs
    )


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    precision: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer update over ``grad_accum_steps`` micro-batches; (loss, pre-clip grad norm).

    Both stay on the device: reading them would force a host sync.
    """
    micro = cfg.batch_size // cfg.grad_accum_steps
    total = torch.zeros((), device=device)
    for i in range(cfg.grad_accum_steps):
        _sync_gradients(model, i == cfg.grad_accum_steps - 1)
        x = inputs[i * micro : (i + 1) * micro].to(device, non_blocking=True)
        y = targets[i * micro : (i + 1) * micro].to(device, non_blocking=True)
        with autocast(device, precision):
            loss = model(x, targets=y) / cfg.grad_accum_steps  # float32, logits never whole
        scaler.scale(loss).backward()
        total += loss.detach()
    scaler.unscale_(optimizer)
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total, grad_norm


def _sync_gradients(model: torch.nn.Module, sync: bool) -> None:
    """Under DDP, all-reduce gradients in the last micro-batch's backward only.

    What ``DistributedDataParallel.no_sync()`` does, set per micro-batch; DDP reads the flag in
    its forward. A plain (or compiled plain) model has no such flag and is left alone.
    """
    module = getattr(model, "_orig_mod", model)  # torch.compile's wrapper holds the DDP module
    if hasattr(module, "require_backward_grad_sync"):
        module.require_backward_grad_sync = sync


# ------------------------------------------------------------------------------- run files


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


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


def _write_or_check_config(run_dir: Path, cfg: RunConfig) -> None:
    resolved = cfg.model_dump(mode="json")
    path = run_dir / "config.json"
    if path.is_file():
        old, new = _flatten(json.loads(path.read_text())), _flatten(resolved)
        changed = sorted(
            k
            for k in old.keys() | new.keys()
            if old.get(k) != new.get(k) and k not in OBSERVATION_ONLY
        )
        if changed:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
            raise LmablateError(
                f"{run_dir} holds a run with a different config ({details}); resume it with "
                "its own config, or train into a new --out directory"
            )
    write_json_atomic(path, resolved)


@dataclass
class _Interval:
    """Training steps since the last train record: summed loss (on device), count, time."""

    loss: torch.Tensor
    steps: int = 0
    time_s: float = 0.0

    @classmethod
    def restore(cls, state: dict[str, Any] | None, device: torch.device) -> _Interval:
        if state is None:
            return cls(torch.zeros((), device=device))
        return cls(state["loss"].to(device), state["steps"], state["time_s"])

    def state(self) -> dict[str, Any]:
        return {"loss": self.loss.cpu(), "steps": self.steps, "time_s": self.time_s}

    def add(self, loss: torch.Tensor) -> None:
        self.loss += loss
        self.steps += 1

    def record(self, step: int, tokens_per_step: int, lr: float, grad_norm: float) -> dict:
        return {
            "kind": "train",
            "step": step,
            "tokens_seen": step * tokens_per_step,
            "loss": float(self.loss) / self.steps,  # mean over the steps since the last record
            "lr": lr,
            "grad_norm": grad_norm,  # pre-clip norm of the logged step
            "step_time": self.time_s / self.steps,
            "tokens_per_s": self.steps * tokens_per_step / self.time_s,
        }


class _StopRequest:
    """SIGINT/SIGTERM ask the loop to checkpoint and stop at the next step boundary.

    A second Ctrl-C stops at once (KeyboardInterrupt), for a user who cannot wait.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
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


# ------------------------------------------------------------------------------------ train


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    stop_at: int | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train (or resume, or skip if finished) the run in ``run_dir``.

    Under torchrun every process calls this; rank 0 alone writes ``run_dir`` and logs.
    """
    run_dir = Path(run_dir)
    world = World.from_environment()
    if not world.is_main:
        progress, log = False, _silent
    existing = read_summary(run_dir)
    if existing is not None and existing["status"] in FINISHED:
        log(f"{run_dir} is already finished ({existing['status']}); nothing to do")
        return RunResult(existing["status"], existing["step"], run_dir, existing)
    if not world.is_main:
        try:
            return _train(cfg, run_dir, world, progress=progress, stop_at=stop_at, log=log)
        finally:
            world.leave()
    with exclusive(run_dir, "training"):
        _write_or_check_config(run_dir, cfg)
        (run_dir / "summary.json").unlink(missing_ok=True)  # a failed run is being retried
        try:
            return _train(cfg, run_dir, world, progress=progress, stop_at=stop_at, log=log)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, torch.OutOfMemoryError):
                message = (
                    f"out of memory ({exc}); lower train.batch_size, raise "
                    "train.grad_accum_steps to keep the same batch, or shorten seq_len"
                )
            with contextlib.suppress(LmablateError):  # the disk may be what failed
                write_json_atomic(
                    run_dir / "summary.json", {"status": "failed", "message": message}
                )
            raise
        finally:
            world.leave()


def _silent(message: str) -> None:
    """The log of ranks other than 0: one process speaks for the run."""


class _NoMetrics:
    """Where ranks other than 0 write their (identical) records: nowhere."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _prepare_in_turn(
    cfg: RunConfig, world: World, progress: bool, log: Callable[[str], None]
) -> PreparedData:
    """Rank 0 builds the token cache (and a trained tokenizer) first; the others then read it,
    so no two processes write the same cache."""
    data = prepare(cfg.data, progress=progress, log=log) if world.is_main else None
    world.barrier()
    return data if data is not None else prepare(cfg.data, progress=False)


def _train(
    cfg: RunConfig,
    run_dir: Path,
    world: World,
    *,
    progress: bool,
    stop_at: int | None,
    log: Callable[[str], None],
) -> RunResult:
    t_start = time.perf_counter()
    tc = cfg.train
    check_available(tc.logger)  # before any work: a missing extra is not a crash mid-run
    device = world.join(resolve_device(tc.device))
    precision = resolve_precision(tc.precision, device)
    if device.type == "cpu":
        tune_allocator()
    # each rank's share of every global batch; train_step sees only its own slice
    per_rank, accum = world.local_batch(tc.batch_size, tc.grad_accum_steps)
    step_cfg = tc.model_copy(update={"batch_size": per_rank, "grad_accum_steps": accum})
    data = _prepare_in_turn(cfg, world, progress, log)
    vocab_size = resolve_vocab_size(cfg.model, data.tokenizer.vocab_size)
    batches = TrainBatches(data.train_tokens, tc.batch_size, tc.seq_len, tc.data_seed)
    val = validation_set(data.val_tokens, tc.seq_len, tc.eval_tokens, data.tokenizer.decode)
    # written aside, renamed whole: never half there
    if world.is_main and not (run_dir / "tokenizer").is_dir():
        staging = run_dir / f".tokenizer.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        data.tokenizer.save(staging)
        staging.rename(run_dir / "tokenizer")

    torch.manual_seed(tc.seed)  # the init depends on seed alone, never on data_seed
    model = LM(cfg.model, vocab_size).to(device)
    optimizer = build_optimizer(model, tc, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    trained = world.wrap(model, device)  # DDP across ranks; the model itself for one process
    forward = torch.compile(trained) if tc.compile else trained

    metrics_path = run_dir / "metrics.jsonl"
    loop: dict[str, Any] = {"elapsed_s": 0.0, "train_time_s": 0.0}
    start_step = 0
    resume_from = latest_valid(run_dir, warn=log)
    if resume_from is not None:
        start_step, loop = load_checkpoint(resume_from, model, optimizer, scaler, device)
        if loop.get("data_cache_key", data.cache_dir.name) != data.cache_dir.name:
            raise LmablateError(
                f"{run_dir} was started on other data (token cache {loop['data_cache_key']}, "
                f"now {data.cache_dir.name}): the corpus or tokenizer changed. Train into a new "
                "--out directory, or delete this one to start over"
            )
        log(f"resuming {run_dir} from step {start_step}")
    if stop_at is not None and stop_at <= start_step:
        raise LmablateError(
            f"--stop-at {stop_at} is not after step {start_step}, where {run_dir} resumes"
        )
    if world.is_main:
        truncate_jsonl(metrics_path, start_step if resume_from is not None else -1)

    tokens_per_step = tc.batch_size * tc.seq_len
    flops_per_token = training_flops_per_token(cfg.model, vocab_size, tc.seq_len)
    peak = peak_flops(device, precision)
    if peak is not None:  # throughput counts every rank's tokens, so the peak counts every GPU
        peak *= world.size
    metrics: MetricsLog | _NoMetrics = _NoMetrics()
    if world.is_main:
        tracker = make_tracker(tc.logger, run_dir, cfg.model_dump(mode="json"), tc.wandb_project)
        metrics = MetricsLog(metrics_path, tracker)
    elapsed_before = loop["elapsed_s"]

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t_start

    def run_eval(step: int) -> dict[str, Any]:
        record = {
            "kind": "eval",
            "step": step,
            "tokens_seen": step * tokens_per_step,
            **evaluate(model, val, vocab_size, device, precision),
            "elapsed": elapsed(),
        }
        metrics.write(record)
        log(
            f"step {step:>6}  val_loss {record['val_loss']:.4f}  val_bpb "
            f"{record['val_bpb']:.4f}  val_acc {record['val_accuracy']:.3f}"
        )
        return record

    def checkpoint(step: int, pending: _Interval) -> None:
        if not world.is_main:  # every rank holds the same weights; one writes them
            return
        state = {
            **loop,
            "elapsed_s": elapsed(),
            "interval": pending.state(),
            "data_cache_key": data.cache_dir.name,
        }
        save_checkpoint(run_dir, step, model, optimizer, scaler, state)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=tc.max_steps,
        initial=start_step,
        unit="step",
        dynamic_ncols=True,
        desc=run_dir.name,
        disable=None if progress else True,
    )
    if progress and not bar.disable:
        log = bar.write  # keep messages above the bar
    # steps since the last train record; carried through checkpoints so a stop between two
    # logging steps changes nothing that is logged
    pending = _Interval.restore(loop.pop("interval", None), device)
    status, step, message = "complete", start_step, None
    try:
        with _StopRequest() as stop:
            if start_step == 0:
                run_eval(0)
            first_bad = torch.full((), -1, dtype=torch.long, device=device)
            synchronize(device)
            t_last = time.perf_counter()
            for update in range(start_step, tc.max_steps):
                lr = lr_at(update, tc)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                inputs, targets = (world.my_slice(t) for t in batches.batch_at(update))
                loss, grad_norm = train_step(
                    forward, optimizer, scaler, inputs, targets, step_cfg, device, precision
                )
                step = update + 1
                if tc.compile and update == start_step:  # this step compiled the model
                    synchronize(device)
                    loop["compile_s"] = loop.get("compile_s", 0.0) + time.perf_counter() - t_last
                    loop["compile_steps"] = loop.get("compile_steps", 0) + 1
                pending.add(loss)
                finite = torch.isfinite(loss)
                if not scaler.is_enabled():  # with fp16 an inf norm is a skipped step, not a NaN
                    finite &= torch.isfinite(grad_norm)
                first_bad = torch.where((first_bad < 0) & ~finite, step, first_bad)

                eval_due = step % tc.eval_every == 0 or step == tc.max_steps
                log_due = step % tc.log_every == 0 or eval_due
                stop_due = step == stop_at or world.any(stop.signal_name is not None)
                save_due = step % tc.checkpoint_every == 0 or step == tc.max_steps or stop_due
                if not (log_due or save_due):
                    continue
                synchronize(device)
                pending.time_s += time.perf_counter() - t_last
                # from here on every rank holds the global mean loss, so what is logged and
                # checkpointed is the single-process number
                pending.loss = world.mean(pending.loss)
                bad_step = world.earliest(int(first_bad))
                if bad_step >= 0:
                    # time of the steps counted in tokens_seen, pro-rated within the interval
                    done = bad_step - (step - pending.steps)
                    loop["train_time_s"] += pending.time_s * done / pending.steps
                    status, step = "diverged", bad_step
                    message = f"non-finite training loss or gradient at step {step}"
                    log(f"run diverged: {message}; stopping (earlier checkpoints are kept)")
                    break
                if log_due:
                    loop["train_time_s"] += pending.time_s
                    record = pending.record(step, tokens_per_step, lr, float(grad_norm))
                    metrics.write({**record, "elapsed": elapsed()})
                    bar.update(step - bar.n)
                    bar.set_postfix(
                        loss=f"{record['loss']:.3f}",
                        lr=f"{lr:.2e}",
                        tok_s=f"{record['tokens_per_s']:,.0f}",
                        refresh=False,
                    )
                    pending = _Interval.restore(None, device)
                if eval_due and not math.isfinite(run_eval(step)["val_loss"]):
                    status, message = "diverged", f"non-finite validation loss at step {step}"
                    log(f"run diverged: {message}")
                    break
                if save_due:
                    checkpoint(step, pending)
                if stop_due and step < tc.max_steps:
                    status = "interrupted" if stop.signal_name else "stopped"
                    break
                synchronize(device)
                t_last = time.perf_counter()
    finally:
        bar.close()
        metrics.close()

    if status in ("interrupted", "stopped"):
        log(f"stopped at step {step}; checkpoint saved in {run_dir / 'checkpoint'}")
        return RunResult(status, step, run_dir)
    if not world.is_main:
        return RunResult(status, step, run_dir)  # rank 0 writes the summary

    loop["elapsed_s"] = elapsed()
    summary = build_summary(
        status=status,
        step=step,
        message=message,
        cfg=cfg,
        records=read_jsonl(metrics_path),
        loop=loop,
        vocab_size=vocab_size,
        flops_per_token=flops_per_token,
        peak=peak,
        device=device,
        precision=precision,
        val=val,
        train_tokens=len(data.train_tokens),
        data_key=data.cache_dir.name,
        tokenizer=data.tokenizer.name,
        data_meta={key: data.meta[key] for key in ("documents", "tokens", "leakage")},
        processes=world.size,
    )
    write_json_atomic(run_dir / "summary.json", summary)
    if status == "complete":  # only the final checkpoint is worth its disk space now
        for old in checkpoints(run_dir)[:-1]:
            shutil.rmtree(old, ignore_errors=True)
    return RunResult(status, step, run_dir, summary)


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
    processes: int = 1,
) -> dict[str, Any]:
    tc = cfg.train
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
        "best_val_loss": best["val_loss"] if best else None,
        "best_val_step": best["step"] if best else None,
        "last_val_loss": evals[-1]["val_loss"] if evals else None,
        "final_train_loss": smoothed_train_loss([r for r in records if r["step"] <= step]),
        "tokens_seen": tokens_seen,
        "epochs": tokens_seen / train_tokens,
        "params": count_parameters(cfg.model, vocab_size),
        "vocab_size": vocab_size,
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
        "eval": {
            "targets": val.n_targets,
            "bytes": val.n_bytes,
            "targets_digest": digest(val.targets[val.targets >= 0].tolist()),
        },
        "tokenizer": tokenizer,
        "data": data_meta,
        "config_hash": digest(cfg.model_dump(mode="json")),
        "data_cache_key": data_key,
        "environment": {**environment(device), "processes": processes},
    }
    return summary
