"""Text samples of a study's runs: every finished run continues the study's prompts
(``samples.json``), then every continuation is scored and measured for repetition and diversity.

The prompts are, by default, the openings of held-out validation documents (the first
``samples.prompt_tokens`` tokens of the first ``samples.documents`` documents long enough to
have a continuation), chosen once per study from the validation tokens and written to
``DIR/sample_prompts.json`` with each document's true continuation; fixed ``samples.prompts``
follow them. Each prompt is continued ``samples.draws`` times, draw d with sampler seed
``samples.seed + d``: the same seeds for every run, and more than one draw, so no configuration
is judged by one lucky sample.

Two yardsticks score every continuation: the training split's bigram count model (the
reference-loss bigram; it favours no configuration, and the documents' own continuations are
scored by it too, for scale) and the baseline's model (which favours text like its own, so it
is shown second).

A sample that fails never fails its run: the run stands, and the report says what is missing.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import device as torch_device

from lmablate.config.run import SEED_MAX
from lmablate.config.study import SamplesConfig, Study, StudyRun
from lmablate.data.references import CountModels
from lmablate.data.tokenizers import Tokenizer
from lmablate.generation import (
    Sampling,
    continuation_perplexity,
    continuation_text,
    generate,
    quality,
)
from lmablate.hardware import resolve_precision
from lmablate.training.checkpoint import load_run
from lmablate.training.summary import read_summary, write_json_atomic

PROMPTS_FILE = "sample_prompts.json"  # in the study directory, beside study.yaml


def document_prompts(
    val_tokens: np.ndarray, tokenizer: Tokenizer, settings: SamplesConfig, context: int
) -> list[dict[str, Any]]:
    """The openings of the first ``settings.documents`` validation documents with at least one
    token after their prompt: prompt ids and text, and the document's true continuation (up to
    ``max_new_tokens`` tokens, ending at its EOS). A prompt is at most ``prompt_tokens`` long
    and leaves room for the continuation in ``context`` (the study's shortest), so every
    configuration sees all of it; one that would end inside a character is shortened by up to
    three tokens so that it decodes whole."""
    length = max(1, min(settings.prompt_tokens, context - settings.max_new_tokens))
    ends = np.flatnonzero(val_tokens == tokenizer.eos_id)
    starts = np.concatenate([[0], ends[:-1] + 1]) if len(ends) else np.array([], dtype=np.int64)
    out: list[dict[str, Any]] = []
    for index, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        if len(out) == settings.documents:
            break
        document = val_tokens[start:end].tolist()
        cut = length
        while cut > max(1, length - 3) and tokenizer.decode(document[:cut]).endswith("\ufffd"):
            cut -= 1
        if len(document) <= cut:
            continue  # no continuation to compare with
        prompt, truth = document[:cut], document[cut : cut + settings.max_new_tokens]
        out.append(
            {
                "document": index,
                "prompt_ids": prompt,
                "prompt": tokenizer.decode(prompt),
                "reference_ids": truth,
                "reference": continuation_text(tokenizer, prompt, truth),
            }
        )
    return out


def write_prompts(
    directory: Path, study: Study, val_tokens: np.ndarray, tokenizer: Tokenizer
) -> None:
    """DIR/sample_prompts.json, from the study's validation tokens (rewritten when they or the
    sample settings change)."""
    settings = study.config.samples
    context = min(run.config.train.seq_len for run in study.runs)
    record = {
        "settings": settings.model_dump(mode="json", include={"documents", "prompt_tokens"})
        | {"max_new_tokens": settings.max_new_tokens},
        "prompts": document_prompts(val_tokens, tokenizer, settings, context),
    }
    path = directory / PROMPTS_FILE
    if not path.is_file() or json.loads(path.read_text()) != record:
        write_json_atomic(path, record)


def _held_out_prompts(directory: Path) -> list[dict[str, Any]]:
    """The study's held-out prompts (DIR/sample_prompts.json)."""
    path = directory / PROMPTS_FILE
    return json.loads(path.read_text())["prompts"] if path.is_file() else []


def _held_out(run_dir: Path) -> list[dict[str, Any]]:
    """The study's held-out prompts for a run at DIR/runs/VARIANT/seed-K."""
    return _held_out_prompts(run_dir.parents[2])


def write_samples(run_dir: Path, study: Study, device: str) -> None:
    """samples.json for a finished run, unless it already holds these settings' samples."""
    held_out = _held_out(run_dir) if study.config.samples.documents else []
    settings = {
        **study.config.samples.model_dump(mode="json"),
        "held_out": [[p["document"], p["prompt_ids"]] for p in held_out],
    }
    path = run_dir / "samples.json"
    if path.is_file() and json.loads(path.read_text()).get("settings") == settings:
        return
    prompts: list[str | list[int]] = [p["prompt_ids"] for p in held_out]
    prompts += settings["prompts"]
    if not prompts:
        return
    model, tokenizer, cfg, step = load_run(run_dir, device)
    options = {k: v for k, v in settings.items() if k in Sampling.__dataclass_fields__}
    precision = resolve_precision(cfg.train.precision, torch_device(device))
    samples = []
    for draw in range(settings["draws"]):
        seed = (settings["seed"] + draw) % (SEED_MAX + 1)
        drawn = generate(
            model,
            tokenizer,
            prompts,
            Sampling(**(options | {"seed": seed})),
            context=cfg.train.seq_len,
            precision=precision,
        )
        for index, sample in enumerate(drawn):
            sample |= {"prompt_index": index, "draw": draw, "seed": seed}
            if index < len(held_out):
                sample["source"] = f"validation document {held_out[index]['document']}"
                sample["reference"] = held_out[index]["reference"]
        samples += drawn
    write_json_atomic(path, {"settings": settings, "step": step, "samples": samples})


def score_samples(
    directory: Path,
    runs: list[StudyRun],
    device: str,
    log: Callable[[str], None],
    counts: CountModels | None = None,
) -> None:
    """Score every run's continuations under the training split's bigram (``counts``) and
    under the baseline's model, and write each run's text-quality measures (with those of the
    documents' own continuations, for scale) into its samples.json. A run with another
    tokenizer is scored on the same text encoded with the baseline's tokenizer (its own token
    ids index another vocabulary)."""
    baselines = [
        r
        for r in runs
        if r.variant == "baseline"
        and (read_summary(directory / r.path) or {}).get("status") == "complete"
    ]
    written = next(r.config for r in runs if r.variant == "baseline")
    baseline = None
    if baselines:
        model, tokenizer, cfg, step = load_run(directory / baselines[0].path, device)
        baseline = {"run": baselines[0].path, "step": step}
    yardstick = {"baseline": baseline, "bigram": counts is not None}

    def scored(prompt: list[int] | str, new_ids: list[int]) -> dict[str, float | None]:
        last = prompt[-1:] if isinstance(prompt, list) else []  # samples before ids were kept
        return {
            "bigram_ppl": counts.bigram_perplexity(last + new_ids)
            if counts is not None and last
            else None,
            "baseline_ppl": continuation_perplexity(
                model, tokenizer, prompt, new_ids, cfg.train.seq_len
            )
            if baseline
            else None,
        }

    held_out = [
        {"new_token_ids": p["reference_ids"], **scored(p["prompt_ids"], p["reference_ids"])}
        for p in _held_out_prompts(directory)
    ]
    for run in runs:
        path = directory / run.path / "samples.json"
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        if record.get("yardstick") == yardstick and "quality" in record:
            continue
        for sample in record["samples"]:
            if run.config.data.tokenizer == written.data.tokenizer:
                sample |= scored(
                    sample.get("prompt_ids") or sample["prompt"], sample["new_token_ids"]
                )
            elif baseline is not None:  # another tokenizer: the same text in the baseline's
                sample |= scored(
                    tokenizer.encode(sample["prompt"]) or [tokenizer.eos_id],
                    tokenizer.encode(sample["generated_only"]),
                )
            else:
                sample |= {"bigram_ppl": None, "baseline_ppl": None}
        record["yardstick"] = yardstick
        record["quality"] = quality(record["samples"])
        if held_out:
            record["quality"]["held_out_text"] = quality(held_out)
        write_json_atomic(path, record)
    if baseline is None:
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
