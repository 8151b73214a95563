"""Matched budgets: every variant's schedule ends where the baseline's budget does.

Comparing runs at a budget that some of them pass mid-schedule is unsound: under a decaying
schedule a run that is still at a high learning rate is not yet as good as it will be, so a
shorter run, fully annealed at that budget, looks better than it is (Hägele et al. 2024). With
``budget: {match: tokens}`` (or ``flops``) each variant instead trains for

    max_steps = round(baseline budget / the variant's budget per step)

optimizer steps, its own schedule (warmup, decay) laid over them, so every final number is an
end-of-schedule number at the same budget, up to half a step of the variant's. Warmup stays as
written in steps, or scales with the run where it is written as ``warmup_fraction``. The token
budget per step is batch_size x seq_len; the FLOPs per step multiply it by the training FLOPs
per token (``model.counts``), which need the tokenizer's vocabulary: matching happens once the
study's data is prepared.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lmablate.config.keys import validate_run_config
from lmablate.config.run import RunConfig
from lmablate.config.study import Study, StudyRun
from lmablate.errors import ConfigError
from lmablate.model.counts import (
    count_parameters,
    resolve_vocab_size,
    training_flops_per_token,
)

ROUNDING = "max_steps = round(baseline budget / budget per step): within half a step"


def budget_per_step(config: RunConfig, unit: str, tokenizer_vocab: int) -> float:
    """Training tokens (or FLOPs) of one optimizer step of ``config``."""
    tc = config.train
    tokens = tc.batch_size * tc.seq_len
    if unit == "tokens":
        return tokens
    vocab = resolve_vocab_size(config.model, tokenizer_vocab)
    return tokens * training_flops_per_token(config.model, vocab, tc.seq_len)


def match_budgets(study: Study, tokenizer_vocab: int) -> Study:
    """``study`` with each variant's max_steps set to end at the baseline's budget (the study
    itself when it matches nothing). Raises ConfigError when a matched run cannot be built,
    naming the variant (its warmup longer than its matched run, for example)."""
    unit = study.config.budget.match
    if unit is None:
        return study
    baseline = {r.seed: r for r in study.runs if r.variant == "baseline"}
    rungs = study.budget.get("ladder_variants", {})  # the baseline at other budgets on purpose
    runs: list[StudyRun] = []
    steps: dict[str, int] = {}
    for run in study.runs:
        if run.variant in rungs:
            runs.append(run)
            continue
        base = baseline[run.seed].config
        total = base.train.max_steps * budget_per_step(base, unit, tokenizer_vocab)
        n = max(1, round(total / budget_per_step(run.config, unit, tokenizer_vocab)))
        steps[run.variant] = n
        why = f"budget: match: {unit}: variant {run.variant!r} would train {n} steps to match "
        why += f"the baseline's {total:.4g} {unit}"
        runs.append(_with_steps(run, n, base, why))
    record: dict[str, Any] = {
        "match": unit,
        "baseline_budget": baseline[study.config.seeds[0]].config.train.max_steps
        * budget_per_step(baseline[study.config.seeds[0]].config, unit, tokenizer_vocab),
        "rounding": ROUNDING,
        "max_steps": steps,
    }
    return replace(study, runs=runs, budget={**study.budget, **record})


def _with_steps(run: StudyRun, n: int, base: RunConfig, why: str) -> StudyRun:
    """``run`` trained for ``n`` steps (its warmup re-derived when written as a fraction), its
    changes from ``base`` updated; ConfigError (``why``, then the reason) when it cannot be."""
    if n == run.config.train.max_steps:
        return run
    raw = run.config.model_dump(mode="json")
    raw["train"]["max_steps"] = n
    if raw["train"]["warmup_fraction"] is not None:
        del raw["train"]["warmup_steps"]  # a fraction: the validator derives the steps
    try:
        config = validate_run_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{why}, and then: {exc}") from None
    changes = dict(run.changes)
    for key in ("max_steps", "warmup_steps"):
        if getattr(config.train, key) != getattr(base.train, key):
            changes[key] = getattr(config.train, key)
        else:
            changes.pop(key, None)
    return replace(run, config=config, changes=changes)


def scale_budgets(study: Study, tokenizer_vocab: int) -> Study:
    """With ``scale: {tokens: per_parameter}``, every run's max_steps set so that its training
    tokens are its parameter count times the ratio (``tokens_per_parameter``, or the
    baseline's own at its written size); the study itself otherwise."""
    scale = study.scale
    if not scale or scale.get("tokens") != "per_parameter":
        return study
    baseline = {r.seed: r for r in study.runs if r.variant == "baseline"}

    def parameters(config: RunConfig) -> int:
        vocab = resolve_vocab_size(config.model, tokenizer_vocab)
        return count_parameters(config.model, vocab)["total"]

    reference = baseline[study.config.seeds[0]].config
    ratio = scale.get("tokens_per_parameter") or (
        reference.train.max_steps * budget_per_step(reference, "tokens", tokenizer_vocab)
    ) / parameters(reference)
    runs, steps = [], {}
    for run in study.runs:
        tokens = ratio * parameters(run.config)
        n = max(1, round(tokens / budget_per_step(run.config, "tokens", tokenizer_vocab)))
        steps[run.variant] = n
        why = f"scale: tokens: per_parameter: variant {run.variant!r} would train {n} steps "
        why += f"({tokens:.4g} tokens at {ratio:.4g} per parameter)"
        runs.append(_with_steps(run, n, baseline[run.seed].config, why))
    # with a given ratio the baseline's own steps move too: changes are measured from it
    base = {r.seed: r.config for r in runs if r.variant == "baseline"}
    runs = [_rebased(run, base[run.seed]) for run in runs]
    record = {"tokens_per_parameter_used": ratio, "max_steps": steps, "rounding": ROUNDING}
    return replace(study, runs=runs, scale={**scale, **record})


def _rebased(run: StudyRun, base: RunConfig) -> StudyRun:
    """``run``'s budget changes measured from the rescaled baseline."""
    changes = dict(run.changes)
    for key in ("max_steps", "warmup_steps"):
        if getattr(run.config.train, key) != getattr(base.train, key):
            changes[key] = getattr(run.config.train, key)
        else:
            changes.pop(key, None)
    return replace(run, changes=changes)
