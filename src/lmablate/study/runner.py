"""Running a study: expand it into runs, train what is not finished, sample, build the report.

``run_study`` is safe to repeat: finished runs are skipped, partial ones resume from their
checkpoint, and a run whose recorded config no longer matches the study is refused up front
(``force`` retrains it from scratch). A run that diverges or fails is recorded with its reason
and the study goes on; only a problem every run shares (the study file, the data) stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import device as torch_device

from lmablate.analysis.rundata import load_study_dir
from lmablate.config.run import RunConfig
from lmablate.config.study import Study, StudyRun
from lmablate.data import prepare
from lmablate.errors import LmablateError
from lmablate.generation import Sampling, continuation_perplexity, generate, quality
from lmablate.hardware import resolve_device, resolve_precision
from lmablate.locks import exclusive
from lmablate.model.counts import count_parameters, resolve_vocab_size, training_flops_per_token
from lmablate.report.package import build_report
from lmablate.training.checkpoint import load_run
from lmablate.training.loop import train
from lmablate.training.summary import FINISHED, OBSERVATION_ONLY, read_summary, write_json_atomic


@dataclass
class StudyOutcome:
    directory: Path
    statuses: dict[str, str]  # run path -> status
    interrupted: bool = False
    report: Path | None = None


def run_flops(config: RunConfig, vocab_size: int) -> float:
    tc = config.train
    per_token = training_flops_per_token(config.model, vocab_size, tc.seq_len)
    return per_token * tc.max_steps * tc.batch_size * tc.seq_len


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def _computed(config: dict[str, Any]) -> dict[str, Any]:
    """A run config without the fields that only change how the run is watched."""
    train = {
        k: v for k, v in config.get("train", {}).items() if f"train.{k}" not in OBSERVATION_ONLY
    }
    return {**config, "train": train}


def config_conflicts(directory: Path, runs: list[StudyRun], data_key: str) -> dict[str, str]:
    """Runs on disk that the study would now train differently: run path -> what changed."""
    conflicts = {}
    for run in runs:
        path = directory / run.path
        if not (path / "config.json").is_file():
            continue
        summary = read_summary(path) or {}
        recorded = json.loads((path / "config.json").read_text())
        if _computed(recorded) != _computed(run.config.model_dump(mode="json")):
            conflicts[run.path] = "config"
        elif summary.get("data_cache_key") not in (None, data_key):
            conflicts[run.path] = "data"  # same config, but the corpus or tokenizer changed
    return conflicts


def write_samples(run_dir: Path, study: Study, device: str) -> None:
    """samples.json for a finished run, unless it already holds these settings' samples."""
    settings = study.config.samples.model_dump(mode="json")
    path = run_dir / "samples.json"
    if path.is_file() and json.loads(path.read_text()).get("settings") == settings:
        return
    model, tokenizer, cfg, step = load_run(run_dir, device)
    sampling = Sampling(**{k: v for k, v in settings.items() if k != "prompts"})
    precision = resolve_precision(cfg.train.precision, torch_device(device))
    samples = generate(
        model,
        tokenizer,
        list(settings["prompts"]),
        sampling,
        context=cfg.train.seq_len,
        precision=precision,
    )
    write_json_atomic(path, {"settings": settings, "step": step, "samples": samples})


def score_samples(
    directory: Path, runs: list[StudyRun], device: str, log: Callable[[str], None]
) -> None:
    """Perplexity of every run's continuations under the baseline (a common yardstick), and
    each run's text-quality measures, written into its samples.json."""
    baselines = [
        r
        for r in runs
        if r.variant == "baseline"
        and (read_summary(directory / r.path) or {}).get("status") == "complete"
    ]
    yardstick = None
    if baselines:
        reference = directory / baselines[0].path
        model, tokenizer, cfg, step = load_run(reference, device)
        yardstick = {"run": baselines[0].path, "step": step}
    for run in runs:
        path = directory / run.path / "samples.json"
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        if record.get("yardstick") == yardstick and "quality" in record:
            continue
        for sample in record["samples"]:
            sample["baseline_ppl"] = (
                continuation_perplexity(
                    model, tokenizer, sample["prompt"], sample["new_token_ids"], cfg.train.seq_len
                )
                if yardstick
                else None
            )
        record["yardstick"] = yardstick
        record["quality"] = quality(record["samples"])
        write_json_atomic(path, record)
    if yardstick is None:
        log("no complete baseline run: continuations are not scored under the baseline")


def run_study(
    study: Study,
    directory: Path,
    *,
    only: list[str] | None = None,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    parallel: int = 1,
    nproc_per_node: int = 1,
    ray: bool | str = False,
) -> StudyOutcome:
    """Train every run of ``study`` that is not finished, sample, score and build the report.

    By default the runs train one after another in this process. ``parallel`` trains up to
    that many at once on this machine, ``nproc_per_node`` trains each run on that many
    processes (GPUs) with torchrun, and ``ray`` makes every run a Ray task, on the cluster at
    that address (``True``: the one RAY_ADDRESS names, else a Ray instance started here).
    """
    runs = study.runs
    if only:
        unknown = sorted(set(only) - set(study.variants))
        if unknown:
            raise LmablateError(
                f"--only: no variant named {', '.join(unknown)}; the study has "
                f"{', '.join(study.variants)}"
            )
        runs = [r for r in runs if r.variant in only]
    with exclusive(directory, "study"):
        pool = _pool(study, parallel, nproc_per_node, ray)
        try:
            return _run_study(
                study, directory, runs, force=force, progress=progress, log=log, pool=pool
            )
        finally:
            if pool is not None:
                pool.close()


def _pool(study: Study, parallel: int, nproc: int, ray: bool | str) -> Any:
    """Where the runs train: None for this process, else a launch.LocalPool or RayPool."""
    from lmablate.study.pools import LocalPool, RayPool

    if ray is not False:
        if parallel != 1:
            raise LmablateError(
                "--parallel and --ray do not combine: Ray places the runs on the cluster "
                "itself; drop --parallel"
            )
        address = ray if isinstance(ray, str) else None
        return RayPool(address, nproc, study.baseline.train.device, _Samples(study))
    if parallel == 1 and nproc == 1:
        return None
    return LocalPool(parallel, nproc, resolve_device(study.baseline.train.device).type)


@dataclass(frozen=True)
class _Samples:
    """write_samples for a study, as a Ray task calls it on the run's node."""

    study: Study

    def __call__(self, run_dir: Path, device: str) -> None:
        write_samples(run_dir, self.study, device)


class _Progress:
    """The study's progress lines: which run, the time so far and an ETA from the FLOPs of
    the runs trained so far (runs found finished do not count: they took no time here)."""

    def __init__(self, runs: list[StudyRun], flops: dict[str, float]) -> None:
        self.number = {run.path: index for index, run in enumerate(runs, 1)}
        self.remaining = dict(flops)
        self.done_flops = 0.0
        self.started = time.perf_counter()

    def line(self, run: StudyRun, state: str) -> str:
        elapsed = time.perf_counter() - self.started
        eta = (
            f", ETA {_duration(elapsed / self.done_flops * sum(self.remaining.values()))}"
            if self.done_flops
            else ""
        )
        return (
            f"[run {self.number[run.path]}/{len(self.number)}] {run.variant} seed {run.seed} "
            f"({state}) — elapsed {_duration(elapsed)}{eta}"
        )

    def ended(self, run: StudyRun, trained: bool) -> None:
        flops = self.remaining.pop(run.path)
        if trained:
            self.done_flops += flops


def _run_study(
    study: Study,
    directory: Path,
    runs: list[StudyRun],
    *,
    force: bool,
    progress: bool,
    log: Callable[[str], None],
    pool: Any = None,
) -> StudyOutcome:
    data = prepare(study.data, progress=progress, log=log)  # once: every run reuses the cache
    conflicts = config_conflicts(directory, runs, data.cache_dir.name)
    if conflicts and not force:
        listed = ", ".join(f"{path} ({what})" for path, what in conflicts.items())
        raise LmablateError(
            "the study changed since these runs were trained, so their results no longer "
            f"match it: {listed}. Restore the study, train into another --out, or pass "
            "--force to retrain them from scratch"
        )
    for path in conflicts:
        log(f"--force: retraining {path} from scratch")
        shutil.rmtree(directory / path)
    resolved = yaml.safe_dump(study.resolved(), sort_keys=False)
    staging = directory / f".study.yaml.{os.getpid()}"
    staging.write_text(resolved)
    os.replace(staging, directory / "study.yaml")
    vocab = {r.path: resolve_vocab_size(r.config.model, data.tokenizer.vocab_size) for r in runs}
    tracker = _Progress(runs, {r.path: run_flops(r.config, vocab[r.path]) for r in runs})
    device = str(resolve_device(study.baseline.train.device))
    outcome = StudyOutcome(directory, {})
    try:
        if pool is None:
            _train_in_turn(study, directory, runs, outcome.statuses, tracker, device, progress, log)
        else:
            _train_launched(study, directory, runs, outcome.statuses, tracker, device, pool, log)
    except KeyboardInterrupt:
        outcome.interrupted = True
    if not outcome.interrupted:
        try:
            with _deferred_interrupts():
                score_samples(directory, study.runs, device, log)
        except KeyboardInterrupt:
            outcome.interrupted = True
        except Exception as exc:  # the runs stand; the report says the scores are missing
            log(f"scoring the text samples failed: {type(exc).__name__}: {exc}")
    if not outcome.interrupted:
        log("building the report")
        try:
            outcome.report = build_report(directory)
        except KeyboardInterrupt:  # the runs are done; rerunning rebuilds the report
            outcome.interrupted = True
    return outcome


def _train_in_turn(
    study: Study,
    directory: Path,
    runs: list[StudyRun],
    statuses: dict[str, str],
    tracker: _Progress,
    device: str,
    progress: bool,
    log: Callable[[str], None],
) -> None:
    """Train the runs one after another in this process."""
    for run in runs:
        run_dir = directory / run.path
        summary = read_summary(run_dir)
        finished = summary is not None and summary["status"] in FINISHED
        log(tracker.line(run, "finished" if finished else "training"))
        try:
            result = train(run.config, run_dir, progress=progress, log=log)
        except Exception as exc:  # one failed run never takes the study down
            statuses[run.path] = "failed"
            log(f"run {run.path} failed: {type(exc).__name__}: {exc}; the study goes on")
            tracker.ended(run, trained=False)
            continue
        if result.status == "interrupted":
            raise KeyboardInterrupt
        statuses[run.path] = result.status
        tracker.ended(run, trained=not finished)
        if result.status == "complete":
            _sample(run, directory, study, device, log)


def _train_launched(
    study: Study,
    directory: Path,
    runs: list[StudyRun],
    statuses: dict[str, str],
    tracker: _Progress,
    device: str,
    pool: Any,
    log: Callable[[str], None],
) -> None:
    """Train the runs in their own processes (or Ray tasks) through ``pool``, as many at once
    as it has room for; each ended run is recorded, and sampled here when complete."""
    log(f"training on {pool.describe()}")
    by_path = {run.path: run for run in runs}
    queue = []
    for run in runs:
        summary = read_summary(directory / run.path)
        if summary is None or summary["status"] not in FINISHED:
            queue.append(run)
            continue
        log(tracker.line(run, "finished"))
        statuses[run.path] = summary["status"]
        tracker.ended(run, trained=False)
        if summary["status"] == "complete":
            _sample(run, directory, study, device, log)
    try:
        while queue or pool.running:
            while queue and pool.has_room():
                run = queue.pop(0)
                state = pool.start(run.path, run.config, directory / run.path)
                log(tracker.line(run, state))
            for end in pool.wait():
                run = by_path[end.key]
                if end.status == "interrupted":  # stopped from outside: stop the study too
                    raise KeyboardInterrupt
                statuses[run.path] = end.status
                tracker.ended(run, trained=True)
                if end.status == "failed":
                    log(f"run {run.path} failed: {end.message}; the study goes on")
                else:
                    log(tracker.line(run, end.status))
                if end.status == "complete":
                    _sample(run, directory, study, device, log)
    except KeyboardInterrupt:
        log("stopping the runs in progress (each saves a checkpoint)")
        pool.stop()
        raise


def _sample(
    run: StudyRun, directory: Path, study: Study, device: str, log: Callable[[str], None]
) -> None:
    try:
        with _deferred_interrupts():
            write_samples(directory / run.path, study, device)
    except Exception as exc:  # the run stands; its samples are missing
        log(f"samples for {run.path} failed: {type(exc).__name__}: {exc}")


class _deferred_interrupts:
    """Let a short step (writing samples) finish before a Ctrl-C or SIGTERM takes effect."""

    def __enter__(self) -> None:
        self.pending: int | None = None
        self.previous = {
            sig: signal.signal(sig, self._hold) for sig in (signal.SIGINT, signal.SIGTERM)
        }

    def _hold(self, signum: int, frame: Any) -> None:
        self.pending = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.pending is not None:
            raise KeyboardInterrupt


def estimate_step_time(config: RunConfig, vocab_size: int, device: str, steps: int = 2) -> float:
    """Seconds per optimizer step of this shape on this machine (random tokens, after warm-up)."""
    import torch

    from lmablate.hardware import synchronize
    from lmablate.model.transformer import LM
    from lmablate.optim.optimizers import build_optimizer
    from lmablate.training.loop import train_step

    tc, torch_device = config.train, torch.device(device)
    precision = resolve_precision(tc.precision, torch_device)
    model = LM(config.model, vocab_size).to(torch_device)
    optimizer = build_optimizer(model, tc, torch_device)
    scaler = torch.amp.GradScaler(torch_device.type, enabled=precision == "fp16")
    tokens = torch.randint(0, vocab_size, (tc.batch_size, tc.seq_len + 1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    train_step(model, optimizer, scaler, inputs, targets, tc, torch_device, precision)
    synchronize(torch_device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, scaler, inputs, targets, tc, torch_device, precision)
    synchronize(torch_device)
    return (time.perf_counter() - start) / steps


def dry_run(
    study: Study, only: list[str] | None = None, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """The expanded runs with their size and cost, and an estimated wall-clock per run."""
    data = prepare(study.data, log=log)
    device = str(resolve_device(study.baseline.train.device))
    step_time: dict[str, float] = {}
    rows = []
    for run in study.runs:
        if only and run.variant not in only:
            continue
        cfg, tc = run.config, run.config.train
        vocab = resolve_vocab_size(cfg.model, data.tokenizer.vocab_size)
        shape = json.dumps(
            [
                cfg.model.model_dump(mode="json"),
                tc.batch_size,
                tc.seq_len,
                tc.grad_accum_steps,
                tc.precision,
            ]
        )
        if shape not in step_time:
            log(f"timing a few steps of {run.variant}'s shape on {device}")
            step_time[shape] = estimate_step_time(cfg, vocab, device)
        seconds = step_time[shape]
        # an evaluation is a forward pass (about a third of a training step) over eval_tokens
        evals = tc.max_steps // tc.eval_every + 2
        eval_seconds = evals * seconds / 3 * tc.eval_tokens / (tc.batch_size * tc.seq_len)
        params = count_parameters(cfg.model, vocab)
        rows.append(
            {
                "variant": run.variant,
                "seed": run.seed,
                "changes": run.changes,
                "params": params["total"],
                "non_embedding_params": params["non_embedding"],
                "tokens": tc.max_steps * tc.batch_size * tc.seq_len,
                "flops": run_flops(cfg, vocab),
                "step_time_s": seconds,
                "estimated_s": seconds * tc.max_steps + eval_seconds,
            }
        )
    return rows


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
        wall = _duration(row["wall_time_s"]) if row["wall_time_s"] else "-"
        line = (
            f"{row['variant']:<16} {row['seed']:>4}  {row['status']:<12} {steps:>13}  "
            f"{loss:>8}  {wall}"
        )
        if row["message"]:
            line += f"  ({row['message']})"
        print(line, file=file)
