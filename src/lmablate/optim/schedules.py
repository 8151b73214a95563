"""Learning-rate schedules: pure functions of the optimizer step, testable alone.

Today's one schedule is linear warmup then cosine decay (nanoGPT's ``get_lr``; Loshchilov &
Hutter 2017, "SGDR"), to ``min_lr_ratio * learning_rate`` at ``max_steps``.
"""

from __future__ import annotations

import math

from lmablate.config.run import TrainConfig


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
