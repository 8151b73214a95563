"""``lmablate run --dry-run``: the runs a study expands into, their size and cost, and an
estimated wall-clock time from a few timed optimizer steps of each shape on this machine."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from lmablate.config.run import RunConfig
from lmablate.config.study import Study
from lmablate.data import prepare
from lmablate.hardware import resolve_device, resolve_precision
from lmablate.model.counts import count_parameters, resolve_vocab_size, training_flops_per_token
from lmablate.study.budgets import match_budgets, scale_budgets


def run_flops(config: RunConfig, vocab_size: int) -> float:
    tc = config.train
    per_token = training_flops_per_token(config.model, vocab_size, tc.seq_len)
    return per_token * tc.max_steps * tc.batch_size * tc.seq_len


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


def _tokenizer_vocab(cfg, study_data, data) -> int:
    """The vocabulary of a run's tokenizer: the study's, or a variant's own (a trained BPE's
    as configured, without training it; a named one loaded)."""
    from lmablate.config.data import TrainedTokenizer
    from lmablate.data.tokenizers import load_tokenizer

    if cfg.tokenizer == study_data.tokenizer:
        return data.tokenizer.vocab_size
    if isinstance(cfg.tokenizer, TrainedTokenizer):
        return cfg.tokenizer.train_bpe.vocab_size
    return load_tokenizer(cfg.tokenizer).vocab_size


def dry_run(
    study: Study, only: list[str] | None = None, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """The expanded runs with their size and cost, and an estimated wall-clock per run."""
    data = prepare(study.data, log=log)
    study = match_budgets(study, data.tokenizer.vocab_size)
    study = scale_budgets(study, data.tokenizer.vocab_size)
    device = str(resolve_device(study.baseline.train.device))
    step_time: dict[str, float] = {}
    rows = []
    for run in study.runs:
        if only and run.variant not in only:
            continue
        cfg, tc = run.config, run.config.train
        vocab = resolve_vocab_size(cfg.model, _tokenizer_vocab(cfg.data, study.data, data))
        shape = json.dumps(
            [
                cfg.model.model_dump(mode="json"),
                tc.batch_size,
                tc.seq_len,
                tc.grad_accum_steps,
                tc.precision,
                tc.optimizer,  # Muon's orthogonalization costs time of its own
                tc.muon_ns_steps,
            ]
        )
        if shape not in step_time:
            log(f"timing a few steps of {run.variant}'s shape on {device}")
            step_time[shape] = estimate_step_time(cfg, vocab, device)
        seconds = step_time[shape]
        # an evaluation is a forward pass (about a third of a training step) over eval_tokens,
        # or over the validation documents where they hold fewer
        evals = tc.max_steps // tc.eval_every + 2
        scored = min(tc.eval_tokens, len(data.val_tokens))
        eval_seconds = evals * seconds / 3 * scored / (tc.batch_size * tc.seq_len)
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


def print_dry_run(rows: list[dict[str, Any]]) -> None:
    """The dry run as a table, and the total estimate."""
    width = max([16, *(len(row["variant"]) for row in rows)])
    print(
        f"{'variant':<{width}} {'seed':>4} {'params':>9} {'tokens':>12} {'FLOPs':>9} "
        f"{'s/step':>7} {'est. time':>9}  changes from baseline"
    )
    for row in rows:
        changes = ", ".join(f"{k}={v}" for k, v in row["changes"].items()) or "-"
        print(
            f"{row['variant']:<{width}} {row['seed']:>4} {row['params'] / 1e6:>8.2f}M "
            f"{row['tokens']:>12,} {row['flops']:>9.2e} {row['step_time_s']:>7.3f} "
            f"{row['estimated_s'] / 60:>8.1f}m  {changes}"
        )
    total = sum(r["estimated_s"] for r in rows)
    print(
        f"{len(rows)} runs, estimated {total / 60:.1f} minutes on this machine (from timed "
        "steps of each shape; evaluation included, data preparation not)"
    )
