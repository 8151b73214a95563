"""Evaluation speed: lmablate's vectorized metrics against a per-token Python loop.

A model of the reference baseline's size (d_model 384, 12 layers, 49,152-token vocabulary) is
evaluated on ``--eval-tokens`` validation targets at seq_len 512, in one process:

- lmablate: ``metrics.evaluate``, one full evaluation pass (forward passes and all metrics:
  loss, bits per byte, top-1 and top-5 accuracy, confidence, entropy);
- the metrics alone from the same logits: lmablate's batched tensor operations against the
  naive loop that visits each target token in Python (log-softmax, argmax, top-5 membership,
  max probability, entropy, one ``.item()`` each), as evaluation code is often written.

The two metric computations must agree; the script checks it.

    python benchmarks/bench_eval.py [--eval-tokens 4096] [--rounds 3]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from common import VOCAB, timed

from lmablate.config.run import ModelConfig
from lmablate.data import IGNORE_INDEX, validation_set
from lmablate.hardware import device_name, tune_allocator
from lmablate.model.transformer import LM
from lmablate.training.metrics import METRIC_BLOCK, evaluate, target_sums


@torch.inference_mode()
def naive_sums(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The same five sums as ``metrics.target_sums``, one target token at a time."""
    nll = top1 = top5 = confidence = entropy = 0.0
    for row, target in zip(logits.flatten(0, 1), targets.flatten().tolist(), strict=True):
        if target == IGNORE_INDEX:
            continue
        log_probs = F.log_softmax(row, dim=-1)
        nll -= log_probs[target].item()
        top1 += float(row.argmax().item() == target)
        top5 += float(target in row.topk(5).indices.tolist())
        probs = log_probs.exp()
        confidence += probs.max().item()
        entropy -= (probs * log_probs).sum().item()
    return torch.tensor([nll, top1, top5, confidence, entropy], dtype=torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    tune_allocator()  # as lmablate's training does on the CPU
    cfg = ModelConfig(d_model=384, n_heads=6, n_layers=12, d_ff=1536)
    torch.manual_seed(0)
    model = LM(cfg, VOCAB).eval()
    tokens = torch.randint(0, VOCAB, (args.eval_tokens + 1,)).numpy().astype(np.int64)
    val = validation_set(tokens, 512, args.eval_tokens, lambda ids: "x" * len(ids))

    full_s, _ = timed(lambda: evaluate(model, val, VOCAB, cpu, "fp32"), args.rounds)
    with torch.inference_mode():
        logits = model(val.inputs).float()
    flat, targets = logits.flatten(0, 1), val.targets.flatten()
    ours_s, ours = timed(
        lambda: target_sums(flat, targets, lambda block: block, METRIC_BLOCK // VOCAB), args.rounds
    )
    naive_s, naive = timed(lambda: naive_sums(logits, val.targets), 1)
    torch.testing.assert_close(ours, naive, rtol=1e-4, atol=1e-3)

    print(f"device: {device_name(cpu)}; torch {torch.__version__}")
    print(f"{val.n_targets:,} targets, vocabulary {VOCAB:,}, reference baseline shape")
    print(f"  full evaluation pass (lmablate)   {full_s:8.2f} s")
    print(f"  metrics from logits, vectorized   {ours_s:8.3f} s")
    print(f"  metrics from logits, naive loop   {naive_s:8.3f} s")
    print(f"  vectorized vs naive:              {naive_s / ours_s:.1f}x (target >= 20)")


if __name__ == "__main__":
    main()
