"""Training one run: ``train(cfg, run_dir)`` from a config to a complete run directory.

``_train`` is the recipe, top to bottom: data, model and optimizer, resume, then for every
update the schedule's learning rate, one optimizer step, and whatever is due (a train record,
an evaluation, a checkpoint, a stop); then the summary. What it writes is the run-directory
contract (see DESIGN.md)::

    config.json      the resolved run config
    tokenizer/       the tokenizer the run used (AutoTokenizer-loadable)
    metrics.jsonl    one record per logged step ("kind": "train") and per evaluation ("eval")
    checkpoint/      step-NNNNNNNN/ directories (see checkpoint.py)
    summary.json     written last and atomically: the run is finished (complete, diverged
                     or failed)

Recipe: the optimizer and schedule of ``lmablate.optim`` (AdamW, warmup then cosine), gradient
clipping on the global norm (the pre-clip norm is logged), gradient accumulation, autocast mixed
precision with a gradient scaler for fp16. ``seed`` fixes the initialization and ``data_seed``
the batch order, independently.

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
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from lmablate.config.run import RunConfig, TrainConfig
from lmablate.data import PreparedData, prepare
from lmablate.data.tokenizers import Tokenizer
from lmablate.errors import LmablateError
from lmablate.hardware import (
    autocast,
    memory_bytes,
    resolve_device,
    resolve_precision,
    synchronize,
    tune_allocator,
)
from lmablate.locks import check_claim, exclusive
from lmablate.model.counts import resolve_vocab_size, training_memory_floor
from lmablate.model.transformer import LM
from lmablate.optim.optimizers import Optimizers, build_optimizer, set_learning_rate
from lmablate.optim.schedules import lr_at
from lmablate.training.bookkeeping import Due, Interval, StopRequest
from lmablate.training.checkpoint import latest_valid, load_checkpoint
from lmablate.training.distributed import World
from lmablate.training.metrics import truncate_jsonl
from lmablate.training.recorder import Recorder
from lmablate.training.summary import (
    FINISHED,
    RunResult,
    check_config,
    read_summary,
    write_json_atomic,
    write_or_check_config,
)
from lmablate.training.trackers import check_available


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
    check_claim(run_dir, "training")  # before anything is read from or written to it
    world = World.from_environment()
    if not world.is_main:
        progress, log = False, _silent
    existing = read_summary(run_dir)
    if existing is not None and existing["status"] in FINISHED:
        check_config(run_dir, cfg)  # a finished run of another config is not this one
        log(f"{run_dir} is already finished ({existing['status']}); nothing to do")
        return RunResult(existing["status"], existing["step"], run_dir, existing)
    if not world.is_main:
        try:
            return _train(cfg, run_dir, world, progress=progress, stop_at=stop_at, log=log)
        finally:
            world.leave()
    data = None
    if world.size == 1:  # what can be checked is checked before the run directory is written
        check_config(run_dir, cfg)
        check_available(cfg.train.logger)
        device = resolve_device(cfg.train.device)
        data = prepare(cfg.data, progress=progress, log=log)
        check_memory(cfg, resolve_vocab_size(cfg.model, data.tokenizer.vocab_size), device)
    with exclusive(run_dir, "training"):
        write_or_check_config(run_dir, cfg)
        (run_dir / "summary.json").unlink(missing_ok=True)  # a failed run is being retried
        try:
            return _train(
                cfg, run_dir, world, progress=progress, stop_at=stop_at, log=log, data=data
            )
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


def check_memory(cfg: RunConfig, vocab_size: int, device: torch.device) -> None:
    """Refuse, before anything is allocated, a run whose memory floor exceeds the device's
    memory (on this machine the kernel would kill the process first, with no message)."""
    available = memory_bytes(device)
    floor = training_memory_floor(cfg, vocab_size, resolve_precision(cfg.train.precision, device))
    if available is None or floor["total"] <= available:
        return
    gib = 2**30
    raise LmablateError(
        f"failed before training: needs at least {floor['total'] / gib:.1f} GiB (weights, "
        f"gradients and optimizer state {floor['weights'] / gib:.1f} GiB, activations of one "
        f"micro-batch {floor['activations'] / gib:.1f} GiB) but {device} has "
        f"{available / gib:.1f} GiB; lower train.batch_size (raise train.grad_accum_steps to "
        "keep the batch), shorten train.seq_len or shrink the model"
    )


def _train(
    cfg: RunConfig,
    run_dir: Path,
    world: World,
    *,
    progress: bool,
    stop_at: int | None,
    log: Callable[[str], None],
    data: PreparedData | None = None,
) -> RunResult:
    t_start = time.perf_counter()
    tc = cfg.train
    check_available(tc.logger)  # before any work: a missing extra is not a crash mid-run
    device = world.join(resolve_device(tc.device))
    precision = resolve_precision(tc.precision, device)
    if device.type == "cpu":
        tune_allocator()
    if data is None:  # prepared here under torchrun, rank 0 first
        data = _prepare_in_turn(cfg, world, progress, log)
    vocab_size = resolve_vocab_size(cfg.model, data.tokenizer.vocab_size)
    batches = data.batches(tc.batch_size, tc.seq_len, tc.data_seed)
    val = data.scored("val", tc.seq_len, tc.eval_tokens)
    if world.is_main:
        _save_tokenizer(data.tokenizer, run_dir)

    torch.manual_seed(tc.seed)  # the init depends on seed alone, never on data_seed
    model = LM(cfg.model, vocab_size).to(device)
    optimizer = build_optimizer(model, tc, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    trained = world.wrap(model, device)  # DDP across ranks; the model itself for one process
    forward = torch.compile(trained) if tc.compile else trained
    step_cfg = _rank_share(tc, world)  # train_step sees only this rank's slice of a batch

    start_step, loop = 0, {"elapsed_s": 0.0, "train_time_s": 0.0}
    resume_from = latest_valid(run_dir, warn=log)
    if resume_from is not None:
        start_step, loop = load_checkpoint(resume_from, model, optimizer, scaler, device)
        _check_same_data(run_dir, loop, data)
        log(f"resuming {run_dir} from step {start_step}")
    if stop_at is not None and stop_at <= start_step:
        raise LmablateError(
            f"--stop-at {stop_at} is not after step {start_step}, where {run_dir} resumes"
        )
    if world.is_main:
        truncate_jsonl(run_dir / "metrics.jsonl", start_step if resume_from is not None else -1)

    run = Recorder(
        cfg, run_dir, world, model, optimizer, scaler, device, precision, data, val, vocab_size,
        loop, t_start, start_step, progress, log,
    )  # fmt: skip
    # steps since the last train record, carried through checkpoints
    pending = Interval.restore(loop.pop("interval", None), device)
    status, step, message = "complete", start_step, None
    try:
        with StopRequest() as stop:
            if start_step == 0:
                run.evaluate(0)
            first_bad = torch.full((), -1, dtype=torch.long, device=device)
            synchronize(device)
            t_last = time.perf_counter()
            for update in range(start_step, tc.max_steps):
                lr = lr_at(update, tc)
                set_learning_rate(optimizer, lr)
                inputs, targets = (world.my_slice(t) for t in batches.batch_at(update))
                loss, grad_norm, z_term = train_step(
                    forward, optimizer, scaler, inputs, targets, step_cfg, device, precision
                )
                step = update + 1
                if tc.compile and update == start_step:  # this step compiled the model
                    run.count_compilation(t_last)
                pending.add(loss, z_term)
                finite = torch.isfinite(loss)
                if not scaler.is_enabled():  # with fp16 an inf norm is a skipped step, not a NaN
                    finite &= torch.isfinite(grad_norm)
                first_bad = torch.where((first_bad < 0) & ~finite, step, first_bad)

                stopping = step == stop_at or world.any(stop.signal_name is not None)
                due = Due.at(step, tc, stop=stopping)
                if not due.anything:
                    continue
                synchronize(device)
                pending.time_s += time.perf_counter() - t_last
                # from here on every rank holds the global mean loss, so what is logged and
                # checkpointed is the single-process number
                pending.loss = world.mean(pending.loss)
                pending.z_loss = world.mean(pending.z_loss)
                bad_step = world.earliest(int(first_bad))
                if bad_step >= 0:
                    status, step, message = run.diverged_during(pending, step, bad_step)
                    break
                if due.log:
                    run.record_training(pending, step, lr, float(grad_norm))
                    pending = Interval.restore(None, device)
                if due.eval and not math.isfinite(run.evaluate(step)["val_loss"]):
                    status, message = "diverged", f"non-finite validation loss at step {step}"
                    run.log(f"run diverged: {message}")
                    break
                if due.save:
                    run.checkpoint(step, pending)
                if due.stop and step < tc.max_steps:
                    status = "interrupted" if stop.signal_name else "stopped"
                    break
                synchronize(device)
                t_last = time.perf_counter()
    finally:
        run.close()
    return run.finish(status, step, message)


class StepLoss(NamedTuple):
    """One optimizer update's numbers, on the device (reading them would force a host sync)."""

    loss: torch.Tensor  # mean cross-entropy over the update's micro-batches
    grad_norm: torch.Tensor  # global gradient norm before clipping
    z_loss: torch.Tensor  # the z-loss term of the objective (0 when train.z_loss is 0)


def train_step(
    model: torch.nn.Module,
    optimizer: Optimizers | torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    precision: str,
) -> StepLoss:
    """One optimizer update over ``grad_accum_steps`` micro-batches: backward through the
    objective (cross-entropy plus any z-loss), clip, step."""
    micro = cfg.batch_size // cfg.grad_accum_steps
    total = torch.zeros((), device=device)
    total_z = torch.zeros((), device=device)
    for i in range(cfg.grad_accum_steps):
        _sync_gradients(model, i == cfg.grad_accum_steps - 1)
        x = inputs[i * micro : (i + 1) * micro].to(device, non_blocking=True)
        y = targets[i * micro : (i + 1) * micro].to(device, non_blocking=True)
        with autocast(device, precision):
            losses = model(x, targets=y, z_loss=cfg.z_loss)  # float32, logits never whole
        scaler.scale(losses.objective / cfg.grad_accum_steps).backward()
        total += losses.cross_entropy / cfg.grad_accum_steps
        total_z += losses.z_loss / cfg.grad_accum_steps
    scaler.unscale_(optimizer)
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return StepLoss(total, grad_norm, total_z)


# ----------------------------------------------------------------- the steps before the loop


def _silent(message: str) -> None:
    """The log of ranks other than 0: one process speaks for the run."""


def _prepare_in_turn(
    cfg: RunConfig, world: World, progress: bool, log: Callable[[str], None]
) -> PreparedData:
    """Rank 0 builds the token cache (and a trained tokenizer) first; the others then read it,
    so no two processes write the same cache."""
    data = prepare(cfg.data, progress=progress, log=log) if world.is_main else None
    world.barrier()
    return data if data is not None else prepare(cfg.data, progress=False)


def _save_tokenizer(tokenizer: Tokenizer, run_dir: Path) -> None:
    """``run_dir/tokenizer``, written aside and renamed whole: never half there."""
    if (run_dir / "tokenizer").is_dir():
        return
    staging = run_dir / f".tokenizer.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer.save(staging)
    staging.rename(run_dir / "tokenizer")


def _rank_share(cfg: TrainConfig, world: World) -> TrainConfig:
    """The train section as one rank sees it: its share of every global batch."""
    per_rank, accum = world.local_batch(cfg.batch_size, cfg.grad_accum_steps)
    return cfg.model_copy(update={"batch_size": per_rank, "grad_accum_steps": accum})


def _check_same_data(run_dir: Path, loop: dict[str, Any], data: PreparedData) -> None:
    if loop.get("data_cache_key", data.cache_dir.name) != data.cache_dir.name:
        raise LmablateError(
            f"{run_dir} was started on other data (token cache {loop['data_cache_key']}, "
            f"now {data.cache_dir.name}): the corpus or tokenizer changed. Train into a new "
            "--out directory, or delete this one to start over"
        )


def _sync_gradients(model: torch.nn.Module, sync: bool) -> None:
    """Under DDP, all-reduce gradients in the last micro-batch's backward only.

    What ``DistributedDataParallel.no_sync()`` does, set per micro-batch; DDP reads the flag in
    its forward. A plain (or compiled plain) model has no such flag and is left alone.
    """
    module = getattr(model, "_orig_mod", model)  # torch.compile's wrapper holds the DDP module
    if hasattr(module, "require_backward_grad_sync"):
        module.require_backward_grad_sync = sync
