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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lmablate.config.effect import trained_part
from lmablate.config.keys import with_defaults
from lmablate.config.study import Study, StudyRun
from lmablate.data import prepare
from lmablate.data.references import CountModels
from lmablate.errors import LmablateError
from lmablate.hardware import resolve_device
from lmablate.locks import check_claim, exclusive
from lmablate.model.counts import resolve_vocab_size
from lmablate.report.package import build_report
from lmablate.study.budgets import match_budgets, scale_budgets
from lmablate.study.estimate import run_flops
from lmablate.study.samples import (
    SampleWriter,
    deferred_interrupts,
    sample_run,
    score_samples,
    write_prompts,
)
from lmablate.study.status import duration
from lmablate.training.loop import train
from lmablate.training.summary import (
    FINISHED,
    read_summary,
    write_json_atomic,
)


@dataclass
class StudyOutcome:
    directory: Path
    statuses: dict[str, str]  # run path -> status
    interrupted: bool = False
    report: Path | None = None


def config_conflicts(
    directory: Path, runs: list[StudyRun], data_keys: dict[str, str]
) -> dict[str, str]:
    """Runs on disk that the study would now train differently: run path -> what changed.
    ``data_keys``: each run's token cache key, by run path."""
    conflicts = {}
    for run in runs:
        path = directory / run.path
        if not (path / "config.json").is_file():
            continue
        summary = read_summary(path) or {}
        recorded = json.loads((path / "config.json").read_text())
        # what only documents or watches a run (config.effect.NOT_TRAINED) is no conflict
        wanted = trained_part(run.config.model_dump(mode="json"))
        if trained_part(with_defaults(recorded)) != wanted:
            conflicts[run.path] = "config"
        elif summary.get("data_cache_key") not in (None, data_keys[run.path]):
            conflicts[run.path] = "data"  # same config, but the corpus or tokenizer changed
    return conflicts


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
    check_claim(directory, "study")
    runs = check_launch(study, only, parallel, nproc_per_node, ray)
    with exclusive(directory, "study"):
        _check_same_study(study, directory)
        pool = _pool(study, parallel, nproc_per_node, ray)
        try:
            return _run_study(
                study, directory, runs, force=force, progress=progress, log=log, pool=pool
            )
        finally:
            if pool is not None:
                pool.close()


def check_launch(
    study: Study,
    only: list[str] | None = None,
    parallel: int = 1,
    nproc_per_node: int = 1,
    ray: bool | str = False,
) -> list[StudyRun]:
    """The runs ``--only`` selects, once the options are known to be usable here (what
    ``--dry-run`` checks too, before it prepares any data)."""
    from lmablate.study.pools import plan_slots

    runs = study.runs
    if only:
        unknown = sorted(set(only) - set(study.variants))
        if unknown:
            raise LmablateError(
                f"--only: no variant named {', '.join(unknown)}; the study has "
                f"{', '.join(study.variants)}"
            )
        runs = [r for r in runs if r.variant in only]
    uneven = (
        [r for r in runs if r.config.train.batch_size % nproc_per_node]
        if nproc_per_node > 0
        else []
    )
    if uneven:
        shown = sorted({f"{r.variant} ({r.config.train.batch_size})" for r in uneven})
        raise LmablateError(
            f"--nproc-per-node {nproc_per_node} does not divide the batch of "
            f"{', '.join(shown[:4])}{' and more' if len(shown) > 4 else ''}: each process takes "
            "an equal share of train.batch_size; choose a process count that divides every "
            "batch, or change the batch sizes"
        )
    if ray is not False and parallel != 1:
        raise LmablateError(
            "--parallel and --ray do not combine: Ray places the runs on the cluster "
            "itself; drop --parallel"
        )
    if ray is False and (parallel != 1 or nproc_per_node != 1):
        plan_slots(parallel, nproc_per_node, resolve_device(study.baseline.train.device).type)
    return runs


def _check_same_study(study: Study, directory: Path) -> None:
    """A directory that holds another study's runs is not this study's to take over: its
    study.yaml and report would be replaced and its runs orphaned."""
    recorded = directory / "study.yaml"
    if not recorded.is_file():
        return
    try:
        name = (yaml.safe_load(recorded.read_text()) or {}).get("name")
    except yaml.YAMLError:
        name = None
    if name != study.config.name:
        raise LmablateError(
            f"{directory} holds the study {name!r}, not {study.config.name!r}; train this "
            "study into another --out directory (its runs would otherwise replace that "
            "study's report and orphan its runs)"
        )


def _pool(study: Study, parallel: int, nproc: int, ray: bool | str) -> Any:
    """Where the runs train: None for this process, else a pools.LocalPool or RayPool."""
    from lmablate.study.pools import LocalPool, RayPool

    if ray is not False:  # with --parallel 1: check_launch refused the combination
        address = ray if isinstance(ray, str) else None
        return RayPool(address, nproc, study.baseline.train.device, SampleWriter(study))
    if parallel == 1 and nproc == 1:
        return None
    return LocalPool(parallel, nproc, resolve_device(study.baseline.train.device).type)


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
            f", ETA {duration(elapsed / self.done_flops * sum(self.remaining.values()))}"
            if self.done_flops
            else ""
        )
        return (
            f"[run {self.number[run.path]}/{len(self.number)}] {run.variant} seed {run.seed} "
            f"({state}) — elapsed {duration(elapsed)}{eta}"
        )

    def ended(self, run: StudyRun, trained: bool) -> None:
        flops = self.remaining.pop(run.path)
        if trained:
            self.done_flops += flops


def _data_id(cfg: Any) -> str:
    return json.dumps(cfg.model_dump(mode="json"), sort_keys=True)


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
    study = match_budgets(study, data.tokenizer.vocab_size)
    study = scale_budgets(study, data.tokenizer.vocab_size)
    matched = {run.path: run for run in study.runs}
    runs = [matched[run.path] for run in runs]
    # a variant's own training data (mixture, filters, tokenizer) is prepared once up front too
    keys = {_data_id(study.data): data.cache_dir.name}
    for run in runs:
        if _data_id(run.config.data) not in keys:
            own = prepare(run.config.data, progress=progress, log=log)
            keys[_data_id(run.config.data)] = own.cache_dir.name
    data_keys = {run.path: keys[_data_id(run.config.data)] for run in runs}
    conflicts = config_conflicts(directory, runs, data_keys)
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
    write_prompts(directory, study, data.val_tokens, data.tokenizer)
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
            with deferred_interrupts():
                counts = CountModels(data.train_tokens, data.tokenizer.vocab_size)
                score_samples(directory, study.runs, device, log, counts)
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
        if summary is not None and not finished:  # a failure being retried: its reason is stale
            (run_dir / "summary.json").unlink()
        try:
            result = train(run.config, run_dir, progress=progress, log=log)
        except Exception as exc:  # one failed run never takes the study down
            statuses[run.path] = "failed"
            message = str(exc) if isinstance(exc, LmablateError) else f"{type(exc).__name__}: {exc}"
            if read_summary(run_dir) is None:  # refused before it started: the report says why
                run_dir.mkdir(parents=True, exist_ok=True)
                write_json_atomic(
                    run_dir / "summary.json", {"status": "failed", "message": message}
                )
            log(f"run {run.path} failed: {message}; the study goes on")
            tracker.ended(run, trained=False)
            continue
        if result.status == "interrupted":
            raise KeyboardInterrupt
        statuses[run.path] = result.status
        tracker.ended(run, trained=not finished)
        if result.status == "complete":
            sample_run(run, directory, study, device, log)


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
            sample_run(run, directory, study, device, log)
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
                    sample_run(run, directory, study, device, log)
    except KeyboardInterrupt:
        log("stopping the runs in progress (each saves a checkpoint)")
        pool.stop()
        raise
