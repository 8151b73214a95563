"""Measurements: evaluation metrics, throughput and MFU, and the append-only metrics log.

Evaluation scores the fixed validation targets (``data.ValidationSet``) and returns

- ``val_loss``: mean next-token cross-entropy in nats; ``val_ppl`` = exp(val_loss);
- ``val_bpb``: bits per UTF-8 byte, total nats / ln 2 / bytes of the scored text, which does
  not depend on the tokenizer (Gao et al. 2020, "The Pile", section 3);
- ``val_accuracy`` and ``val_top5_accuracy``: the target is the top-1 / among the top-5 logits;
- ``val_confidence``: mean probability of the model's top prediction;
- ``val_entropy``: mean entropy of the predicted distribution, in nats;
- with ``per_document``, ``documents``: per validation document, [targets, summed nats] (the
  paired bootstrap over documents in ``analysis.stats`` resamples these);
- with several evaluation sets, ``val_sets``: per set, its loss (nats/token) and bpb, from the
  same pass (each target's nats go to its document, each document belongs to one set).

All of it is computed on the device with tensor operations and summed there; the host reads
six numbers once per evaluation.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lmablate.analysis.rundata import read_jsonl
from lmablate.data import IGNORE_INDEX, ValidationSet
from lmablate.hardware import autocast

EVAL_TOKENS_PER_PASS = 2**14  # tokens per evaluation forward pass
EVAL_LOGITS_BUDGET = 2**25  # logits (float32) per metric block on accelerators: 128 MiB
METRIC_BLOCK = 2**20  # logits per block of metric computations: 4 MiB in float32


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    val: ValidationSet,
    vocab_size: int,
    device: torch.device,
    precision: str,
    per_document: bool = False,
) -> dict[str, Any]:
    """All validation metrics for ``model`` on ``val``.

    The model runs to its final hidden states a batch of windows at a time; the LM head and the
    metrics then go through the targets in blocks of rows, so the logits of a whole batch never
    exist at once: on a CPU a block fits in cache, where every metric's pass over it is cheap.
    """
    was_training = model.training
    model.eval()
    windows = max(1, EVAL_TOKENS_PER_PASS // val.inputs.shape[1])
    budget = METRIC_BLOCK if device.type == "cpu" else EVAL_LOGITS_BUDGET
    rows = max(1, budget // vocab_size)
    # nll, correct, top-5 correct, max-probability, entropy, summed over scored targets
    sums = torch.zeros(5, dtype=torch.float64, device=device)
    if per_document and val.documents is None:
        raise ValueError("per-document scores need a validation set built with eos_id")
    several = len(val.sets) > 1
    by_document = (
        torch.zeros(val.n_documents, dtype=torch.float64, device=device)
        if per_document or several
        else None
    )
    for start in range(0, len(val.inputs), windows):
        inputs = val.inputs[start : start + windows].to(device, non_blocking=True)
        targets = val.targets[start : start + windows].to(device, non_blocking=True).flatten()
        owners = None
        if by_document is not None:
            owners = val.documents[start : start + windows].to(device).flatten()
        with autocast(device, precision):
            hidden = model.hidden_states(inputs).flatten(0, 1)  # (windows * T, d)
            sums += target_sums(
                hidden, targets, lambda h: model.logits(h).float(), rows, owners, by_document
            )
    model.train(was_training)
    nll, correct, top5, confidence, entropy = (sums / val.n_targets).tolist()
    total_nats = float(sums[0])
    extra: dict[str, Any] = {}
    if by_document is not None:
        nats_of = by_document.tolist()
        if per_document:
            counts = torch.bincount(val.documents[val.documents >= 0], minlength=val.n_documents)
            extra["documents"] = [
                [int(n), nats] for n, nats in zip(counts.tolist(), nats_of, strict=True)
            ]
        if several:
            extra["val_sets"] = {}
            for part in val.sets:
                nats = sum(nats_of[part.first_document : part.first_document + part.n_documents])
                extra["val_sets"][part.name] = {
                    "loss": nats / part.n_targets,
                    "bpb": nats / math.log(2) / part.n_bytes,
                    "targets": part.n_targets,
                    "bytes": part.n_bytes,
                }
    return {
        "val_loss": nll,
        "val_ppl": math.exp(min(nll, 700.0)),
        "val_bpb": total_nats / math.log(2) / val.n_bytes,
        "val_accuracy": correct,
        "val_top5_accuracy": top5,
        "val_confidence": confidence,
        "val_entropy": entropy,
        **extra,
    }


def target_sums(
    features: torch.Tensor,
    targets: torch.Tensor,
    to_logits: Callable[[torch.Tensor], torch.Tensor],
    rows: int,
    owners: torch.Tensor | None = None,
    by_owner: torch.Tensor | None = None,
) -> torch.Tensor:
    """The metric sums over (N, ...) features and their (N,) targets, ``rows`` at a time;
    ``to_logits`` turns a block of features into (rows, V) float logits (the LM head, or
    nothing when the features are logits already). With ``owners`` (N,) (-1: unscored), each
    scored target's nll is also added into ``by_owner`` at its owner's index."""
    sums = torch.zeros(5, dtype=torch.float64, device=features.device)
    for start in range(0, len(targets), rows):
        logits = to_logits(features[start : start + rows])
        block, nll = _block_sums(logits, targets[start : start + rows])
        sums += block
        if by_owner is not None and owners is not None:
            block_owners = owners[start : start + rows]
            # unscored rows add 0 to document 0: no boolean indexing, so no host sync on GPUs
            counted = torch.where(block_owners >= 0, nll.double(), 0.0)
            by_owner.index_add_(0, block_owners.clamp(min=0), counted)
    return sums


def _block_sums(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over scored targets of (nll, top-1 hit, top-5 hit, max prob, entropy), and each
    target's nll."""
    scored = targets != IGNORE_INDEX
    targets = targets.clamp(min=0)[:, None]  # unscored rows are computed, then zeroed
    log_probs = F.log_softmax(logits, dim=-1)
    nll = -log_probs.gather(1, targets).squeeze(1)
    best = log_probs.topk(min(5, log_probs.shape[-1]), dim=-1)  # (N, 5), best first
    hits = best.indices == targets
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    max_prob = best.values[:, 0].exp()
    stats = torch.stack(
        [nll, hits[:, 0].float(), hits.any(-1).float(), max_prob, entropy]
    )  # (5, N)
    return (stats.double() * scored).sum(-1), nll


def mfu(flops_per_s: float | None, peak: float | None) -> float | None:
    """Model FLOPs utilization; None where the device's peak is not known."""
    if flops_per_s is None or not peak:
        return None
    return flops_per_s / peak


def smoothed_train_loss(records: list[dict[str, Any]], fraction: float = 0.1) -> float | None:
    """Mean logged training loss over the last ``fraction`` of logged steps (at least one)."""
    losses = [r["loss"] for r in records if r.get("kind") == "train"]
    if not losses:
        return None
    tail = losses[-max(1, math.ceil(len(losses) * fraction)) :]
    return sum(tail) / len(tail)


# -------------------------------------------------------------------------------------- JSONL


class MetricsLog:
    """Append-only JSONL; every line is flushed, so a killed run keeps what it logged."""

    def __init__(self, path: Path, tracker: Any = None) -> None:
        self.path, self.tracker = path, tracker  # a trackers.Tracker receives every record too
        self._file = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()
        if self.tracker is not None:
            self.tracker.log(record)

    def close(self) -> None:
        self._file.close()
        if self.tracker is not None:
            self.tracker.close()


def truncate_jsonl(path: Path, last_step: int) -> list[dict[str, Any]]:
    """Keep only records up to ``last_step`` (atomically); what a resumed run replays is dropped."""
    kept = [r for r in read_jsonl(path, check=False) if r["step"] <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in kept), encoding="utf-8")
    os.replace(tmp, path)
    return kept
