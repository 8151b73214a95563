"""Reference losses in the report: a line under each loss table and a key finding. Numbers
come from ``analysis.references``; this module only words them."""

from __future__ import annotations

from typing import Any

from lmablate.analysis.findings import Analysis
from lmablate.report.format import fmt

NAMES = {"uniform": "uniform", "unigram": "unigram", "bigram": "smoothed bigram"}


def reference_line(analysis: Analysis, split: str = "val") -> list[str]:
    """One sentence naming the count models' losses on the targets of a table, or nothing."""
    refs: dict[str, Any] = analysis.references.get(split) or {}
    if not refs:
        return []
    scores = ", ".join(
        f"{NAMES[name]} {fmt(refs[name]['loss'])} ({fmt(refs[name]['bpb'])} bpb)"
        for name in ("uniform", "unigram", "bigram")
    )
    where = "validation" if split == "val" else "test"
    return [
        f"Reference losses on the same {where} targets, from count models of the training "
        f"split alone: {scores}; the bigram is {refs['bigram']['smoothing']}.",
        "",
    ]


def reference_findings(analysis: Analysis) -> list[str]:
    """A key finding: which configurations do (not) beat the bigram reference, by how much."""
    refs = analysis.references
    rows: dict[str, dict[str, Any]] = refs.get("configurations") or {}
    if not rows:
        return []
    bigram = refs["val"]["bigram"]["loss"]
    behind = [v for v, r in rows.items() if not r["beats_bigram"]]
    if refs.get("unit") == "bits per byte":  # tokenizers differ: each against its own bigram
        return _own_reference_findings(rows, behind, refs["margin"])
    if behind:
        names = ", ".join(
            f"{v} ({fmt(rows[v]['val_loss'])}"
            + (", not even below the unigram" if not rows[v]["beats_unigram"] else "")
            + ")"
            for v in behind
        )
        return [
            f"- **Not beyond a bigram model:** {names} do not beat the smoothed bigram "
            f"reference of the training split ({fmt(bigram)} nats on the same validation "
            f"targets) by more than {refs['margin']} nats; such a model has learned little "
            "beyond which token follows which, so its differences from the others say little "
            "about the components compared. Train longer or on more data before reading them."
        ]
    closest = min(rows, key=lambda v: rows[v]["below_bigram"])
    return [
        f"- **Beyond count models:** every configuration beats the smoothed bigram reference "
        f"({fmt(bigram)} nats on the same validation targets), by "
        f"{fmt(rows[closest]['below_bigram'])} nats at the least ({closest})."
    ]


def _own_reference_findings(
    rows: dict[str, dict[str, Any]], behind: list[str], margin
) -> list[str]:
    if behind:
        names = ", ".join(
            f"{v} ({fmt(rows[v]['val_loss'])} bpb against {fmt(rows[v]['bigram'])})" for v in behind
        )
        return [
            f"- **Not beyond a bigram model:** {names} do not beat the smoothed bigram "
            "reference of the training split under their own tokenizer by more than "
            f"{margin} bits per byte; such a model has learned little beyond which token "
            "follows which. Train longer or on more data before reading them."
        ]
    closest = min(rows, key=lambda v: rows[v]["below_bigram"])
    return [
        "- **Beyond count models:** every configuration beats the smoothed bigram reference of "
        "the training split under its own tokenizer (in bits per byte of the same validation "
        f"bytes), by {fmt(rows[closest]['below_bigram'])} bpb at the least ({closest})."
    ]
