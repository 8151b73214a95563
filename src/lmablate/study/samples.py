"""Text samples of a study's runs: every finished run continues the study's prompts
(``samples.json``), then every continuation is scored under the baseline's model (a common
yardstick) and measured for repetition and diversity.

A sample that fails never fails its run: the run stands, and the report says what is missing.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import device as torch_device

from lmablate.config.study import Study, StudyRun
from lmablate.generation import Sampling, continuation_perplexity, generate, quality
from lmablate.hardware import resolve_precision
from lmablate.training.checkpoint import load_run
from lmablate.training.summary import read_summary, write_json_atomic


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


def sample_run(
    run: StudyRun, directory: Path, study: Study, device: str, log: Callable[[str], None]
) -> None:
    """write_samples for a run that just finished, letting a Ctrl-C wait until it is done."""
    try:
        with deferred_interrupts():
            write_samples(directory / run.path, study, device)
    except Exception as exc:  # the run stands; its samples are missing
        log(f"samples for {run.path} failed: {type(exc).__name__}: {exc}")


class deferred_interrupts:
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


@dataclass(frozen=True)
class SampleWriter:
    """write_samples for a study, as a Ray task calls it on the run's node."""

    study: Study

    def __call__(self, run_dir: Path, device: str) -> None:
        write_samples(run_dir, self.study, device)
