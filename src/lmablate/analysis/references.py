"""Reference losses of a study: where each configuration stands against count models. No torch.

Every run records, in summary.json ``reference_losses``, what a uniform, a unigram and a
smoothed bigram model of the training split score on the run's own validation (and test)
targets (``data/references.py`` states the smoothing). Runs of one study share the targets, so
one set of references serves the study; a configuration whose seed-mean validation loss is not
below the bigram's by more than ``MARGIN`` has learned little beyond which token follows which,
and the key findings say so.
"""

from __future__ import annotations

import math
from typing import Any

from lmablate.analysis.rundata import StudyData

MARGIN = 0.05  # nats per token: a configuration within this of the bigram has not beaten it
MODELS = ("uniform", "unigram", "bigram")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _usable(entry: Any) -> bool:
    return isinstance(entry, dict) and all(
        isinstance(entry.get(m), dict) and _finite(entry[m].get("loss")) for m in MODELS
    )


def study_references(
    study: StudyData, per_variant: dict[str, dict[str, Any]], by_bytes: bool = False
) -> dict[str, Any]:
    """The study's reference losses (validation and, with a test split, test) and, per compared
    configuration, its margin below the bigram; {} when no run recorded them. ``by_bytes``
    (configurations with different tokenizers): each configuration against the bigram of its
    own tokenizer, in bits per byte."""
    records = [
        (run.summary.get("eval") or {}, run.summary["reference_losses"])
        for run in study.runs
        if run.status == "complete" and isinstance(run.summary.get("reference_losses"), dict)
    ]
    records = [(scored, refs) for scored, refs in records if _usable(refs.get("val"))]
    if not records:
        return {}
    digests = {scored.get("targets_digest") for scored, _ in records}
    refs = records[0][1]
    out: dict[str, Any] = {
        split: {m: dict(refs[split][m]) for m in MODELS}
        for split in ("val", "test")
        if _usable(refs.get(split))
    }
    out["same_targets"] = len(digests) == 1
    out["margin"] = MARGIN
    if by_bytes:
        out["unit"] = "bits per byte"
        out["configurations"] = _own_references(study, per_variant)
        return out
    bigram = out["val"]["bigram"]["loss"]
    out["configurations"] = {
        variant: {
            "val_loss": entry["eval_loss"],
            "below_bigram": bigram - entry["eval_loss"],
            "beats_bigram": bigram - entry["eval_loss"] > MARGIN,
            "beats_unigram": entry["eval_loss"] < out["val"]["unigram"]["loss"],
        }
        for variant, entry in per_variant.items()
        if variant in study.compared and _finite(entry.get("eval_loss"))
    }
    return out


def _own_references(
    study: StudyData, per_variant: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per configuration, in bits per byte: its bigram and unigram references (its own
    tokenizer's, from its runs) against its seed-mean validation bpb."""
    out = {}
    for variant in study.compared:
        entry = per_variant.get(variant) or {}
        refs = [
            run.summary["reference_losses"]["val"]
            for run in study.runs_of(variant, complete_only=True)
            if isinstance(run.summary.get("reference_losses"), dict)
            and _usable(run.summary["reference_losses"].get("val"))
            and _finite(run.summary["reference_losses"]["val"]["bigram"].get("bpb"))
        ]
        if not refs or not _finite(entry.get("val_bpb")):
            continue
        bigram = refs[0]["bigram"]["bpb"]
        out[variant] = {
            "val_loss": entry["val_bpb"],
            "bigram": bigram,
            "below_bigram": bigram - entry["val_bpb"],
            "beats_bigram": bigram - entry["val_bpb"] > MARGIN,
            "beats_unigram": entry["val_bpb"] < refs[0]["unigram"]["bpb"],
        }
    return out
