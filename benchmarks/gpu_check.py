"""GPU check: the reference baseline's training step on this machine's accelerator.

Runs the baseline of studies/seed.yaml (its model and step; random tokens of its vocabulary, so
no data or network is needed) for ``--steps`` steps at batch 8 and at the largest batch that
fits (doubling until out of memory), each with torch.compile off and on, and prints tokens/s
and MFU against the device's datasheet peak. From the measured FLOP/s it estimates the wall
clock of the whole reference study on this device (every variant's training FLOPs at the
baseline's achieved rate at batch 8, plus its evaluations at the forward-pass rate).

    python benchmarks/gpu_check.py [--steps 200]        on a GPU
    python benchmarks/gpu_check.py --dry-run            anywhere: tiny shape, 3 steps, CPU
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import VOCAB

from lmablate.config.study import load_study
from lmablate.hardware import (
    device_name,
    peak_flops,
    resolve_device,
    resolve_precision,
    synchronize,
    tune_allocator,
)
from lmablate.model.counts import training_flops_per_token
from lmablate.model.transformer import LM
from lmablate.optim.optimizers import build_optimizer
from lmablate.training.loop import train_step

STUDY = Path(__file__).resolve().parent.parent / "studies" / "seed.yaml"


def measure(config, batch: int, steps: int, compile_model: bool, device, precision) -> dict:
    """Median step time of ``steps`` steps (after a first, untimed one) at ``batch``."""
    tc = config.train.model_copy(update={"batch_size": batch, "grad_accum_steps": 1})
    torch.manual_seed(0)
    model = LM(config.model, VOCAB).to(device)
    optimizer = build_optimizer(model, tc, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    forward = torch.compile(model) if compile_model else model
    tokens = torch.randint(0, VOCAB, (steps + 1, batch, tc.seq_len + 1), device=device)
    times = []  # the first step compiles (with compile on) and warms up; it is reported apart
    synchronize(device)
    for batch_tokens in tokens:
        start = time.perf_counter()
        inputs, targets = batch_tokens[:, :-1], batch_tokens[:, 1:]
        train_step(forward, optimizer, scaler, inputs, targets, tc, device, precision)
        synchronize(device)
        times.append(time.perf_counter() - start)
    first, times = times[0], times[1:]
    step_s = statistics.median(times)
    return {
        "batch": batch,
        "compile": compile_model,
        "first_s": first,
        "step_s": step_s,
        "tokens_per_s": batch * tc.seq_len / step_s,
    }


def largest_batch(config, device, precision, start: int, limit: int) -> int:
    """Double the batch from ``start`` until a step runs out of memory (or ``limit``)."""
    best = start
    batch = start * 2
    while batch <= limit:
        try:
            measure(config, batch, 1, False, device, precision)
        except torch.OutOfMemoryError:
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        best, batch = batch, batch * 2
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--dry-run", action="store_true", help="tiny shape on the CPU, 3 steps")
    args = parser.parse_args()
    study = load_study(STUDY)
    config = study.baseline
    device = resolve_device("cpu" if args.dry_run else "auto")
    if args.dry_run:
        tune_allocator()
        config = config.model_copy(
            update={
                "model": config.model.model_copy(
                    update={"d_model": 32, "n_heads": 2, "n_layers": 2, "d_ff": 64}
                ),
                "train": config.train.model_copy(update={"seq_len": 64}),
            }
        )
        args.steps = 3
    elif device.type != "cuda":
        raise SystemExit("no CUDA device here: run with --dry-run to check the script on a CPU")
    precision = resolve_precision(config.train.precision, device)
    flops_per_token = training_flops_per_token(config.model, VOCAB, config.train.seq_len)
    peak = peak_flops(device, precision)
    print(f"device: {device_name(device)}; torch {torch.__version__}; precision {precision}")
    print(f"peak: {peak / 1e12:.0f} TFLOP/s" if peak else "peak: unknown (MFU not reported)")
    print(f"model: {config.model.model_dump()}; seq_len {config.train.seq_len}")

    big = largest_batch(config, device, precision, 8, 16 if args.dry_run else 1024)
    results = []
    for batch in sorted({8, big}):
        for compile_model in (False, True):
            result = measure(config, batch, args.steps, compile_model, device, precision)
            achieved = result["tokens_per_s"] * flops_per_token
            result["mfu"] = achieved / peak if peak else None
            results.append(result)
            mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "n/a"
            print(
                f"  batch {batch:>4}  compile {'on ' if compile_model else 'off'}  "
                f"{result['tokens_per_s']:>10,.0f} tokens/s  step {result['step_s'] * 1e3:8.1f} ms"
                f"  MFU {mfu}  (first step, incl. compilation: {result['first_s']:.1f} s)"
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()

    base = max((r for r in results if r["batch"] == 8), key=lambda r: r["tokens_per_s"])
    rate = base["tokens_per_s"] * flops_per_token  # FLOP/s the study's runs would see
    total_s = 0.0
    for run in study.runs:
        tc = run.config.train
        train_flops = training_flops_per_token(run.config.model, VOCAB, tc.seq_len)
        evals = tc.max_steps // tc.eval_every + 1
        eval_flops = train_flops / 3 * tc.eval_tokens * evals  # forward only
        total_s += (train_flops * tc.max_steps * tc.batch_size * tc.seq_len + eval_flops) / rate
    print(
        f"estimated reference study ({len(study.runs)} runs) on this device: "
        f"{total_s / 60:.1f} min of training and evaluation at the batch-8 rate "
        f"({'compiled' if base['compile'] else 'eager'}), data preparation and samples aside"
    )


if __name__ == "__main__":
    main()
