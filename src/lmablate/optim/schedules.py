"""Learning-rate schedules: pure functions of the optimizer step, testable alone.

Every schedule starts with the same linear warmup, then:

- ``cosine``: cosine decay to ``min_lr_ratio * learning_rate`` at ``max_steps`` (nanoGPT's
  ``get_lr``; Loshchilov & Hutter 2017, "SGDR"). The default.
- ``wsd``: warmup-stable-decay: the peak until the last ``decay_fraction`` of the steps, then
  down to the floor in ``decay_shape`` (linear, cosine, or 1 - sqrt; Hägele et al. 2024,
  "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations").
- ``linear``: a straight line from the peak to the floor (Bergsma et al. 2025 decay to zero
  with ``min_lr_ratio: 0``).
- ``constant``: the peak throughout.
"""

from __future__ import annotations

import math

from lmablate.config.run import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer update ``step`` (0-based).

    Linear warmup: update s < warmup_steps uses lr * (s + 1) / warmup_steps, so the first update
    is not wasted at 0 and update warmup_steps - 1 reaches the peak. Then the schedule's decay
    from the peak at s = warmup_steps (wsd: at its decay start) to min_lr_ratio * lr at
    s = max_steps.
    """
    peak, floor = cfg.learning_rate, cfg.learning_rate * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return peak
    start = cfg.warmup_steps
    if cfg.schedule == "wsd":
        start = max(cfg.warmup_steps, cfg.max_steps - round(cfg.decay_fraction * cfg.max_steps))
        if step < start:
            return peak
    progress = min(1.0, (step - start) / (cfg.max_steps - start))
    shape = cfg.decay_shape if cfg.schedule == "wsd" else cfg.schedule
    if shape == "cosine":
        return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))
    if shape == "sqrt":
        return floor + (peak - floor) * (1.0 - math.sqrt(progress))
    return floor + (peak - floor) * (1.0 - progress)  # linear
