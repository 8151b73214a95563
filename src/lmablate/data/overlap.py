"""Contamination by overlap: word n-grams shared between documents, not only identical hashes.

A document's *overlap* with a reference set of documents is the share of its distinct word
n-grams (lower-cased ``\\w+`` words, ``ngram`` in a row) that occur anywhere in the reference.
A document shorter than ``ngram`` words counts its whole word sequence as its one n-gram, so a
short exact copy still scores 1. This is the n-gram overlap of GPT-3's contamination study
(Brown et al. 2020, appendix C, 13-grams) and of Paloma's decontamination (Magnusson et al.
2023), measured as a share of the document rather than as "any n-gram in common", so that a
shared stock phrase does not disqualify a document while a section repeated under another
heading does.

Two uses, both in ``data.prepare`` before the split is tokenized:

- ``near_duplicates``: walking the corpus in source order, a document whose overlap with the
  documents kept before it is at least the threshold is dropped (the first copy stays).
- ``decontaminate``: a validation document whose overlap with the training documents exceeds
  ``max_overlap`` is moved to training (or dropped); a test document is checked against
  training and validation together, and one that echoes validation is dropped rather than
  moved (in training it would contaminate validation). Moving a document can raise another's
  overlap, so the check repeats until nothing moves.

N-grams are 64-bit polynomial hashes of word ids (wrapping uint64 arithmetic, deterministic);
two different n-grams could share a hash, which would only make a document look more
overlapping, never less.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

_WORD = re.compile(r"\w+")
_BASE = np.uint64(1_000_003)


class NgramIndex:
    """Word n-gram fingerprints of documents, with one word vocabulary shared by all of them."""

    def __init__(self, ngram: int) -> None:
        self.ngram = ngram
        self._words: dict[str, int] = {}

    def fingerprint(self, text: str) -> np.ndarray:
        """The distinct n-gram hashes of a document, sorted (uint64)."""
        ids = np.fromiter(
            (self._words.setdefault(w, len(self._words) + 1) for w in _WORD.findall(text.lower())),
            dtype=np.uint64,
        )
        n = min(self.ngram, len(ids))
        if n == 0:
            return np.zeros(0, dtype=np.uint64)
        hashes = np.zeros(len(ids) - n + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):
                hashes = hashes * _BASE + ids[k : len(ids) - n + 1 + k]
        return np.unique(hashes)


def overlap(fingerprint: np.ndarray, reference: set[int]) -> float:
    """Share of a document's n-grams found in ``reference`` (0 for a document with no words)."""
    if len(fingerprint) == 0:
        return 0.0
    return len(reference.intersection(fingerprint.tolist())) / len(fingerprint)


def _union(fingerprints: Iterable[np.ndarray]) -> set[int]:
    out: set[int] = set()
    for fp in fingerprints:
        out.update(fp.tolist())
    return out


def near_duplicates(fingerprints: list[np.ndarray], threshold: float) -> list[int]:
    """Indices of documents whose overlap with the documents kept before them is >= threshold."""
    seen: set[int] = set()
    dropped = []
    for index, fp in enumerate(fingerprints):
        if len(fp) and overlap(fp, seen) >= threshold:
            dropped.append(index)
        else:
            seen.update(fp.tolist())
    return dropped


@dataclass
class Decontaminated:
    train: list[int]
    val: list[int]
    test: list[int]
    moved: dict[str, int] = field(default_factory=lambda: {"val": 0, "test": 0})
    dropped: dict[str, int] = field(default_factory=lambda: {"val": 0, "test": 0})
    max_overlap: dict[str, float] = field(default_factory=dict)  # after the check
    sharing_any: dict[str, int] = field(default_factory=dict)  # documents with any shared n-gram


def decontaminate(
    fingerprints: list[np.ndarray],
    train: list[int],
    val: list[int],
    test: list[int],
    max_overlap: float,
    action: str = "move",
) -> Decontaminated:
    """Move (or drop) held-out documents that overlap training by more than ``max_overlap``."""
    out = Decontaminated(list(train), list(val), list(test))

    def reference(side: str) -> set[int]:
        ref = _union(fingerprints[i] for i in out.train)
        if side == "test":  # validation steers choices (tuning), so test must not echo it
            ref |= _union(fingerprints[i] for i in out.val)
        return ref

    changed = True
    while changed:  # a document moved into training can raise another's overlap: repeat
        changed = False
        for side in ("val", "test"):
            held: list[int] = getattr(out, side)
            ref = reference(side)
            dirty = {i for i in held if overlap(fingerprints[i], ref) > max_overlap}
            if not dirty:
                continue
            changed = True
            setattr(out, side, [i for i in held if i not in dirty])
            movable = dirty
            if side == "test":  # moved to training, an echo of validation would contaminate it
                val_ref = _union(fingerprints[i] for i in out.val)
                movable = {i for i in dirty if overlap(fingerprints[i], val_ref) <= max_overlap}
            if action == "move":
                out.train = sorted(out.train + sorted(movable))
                out.moved[side] += len(movable)
                out.dropped[side] += len(dirty) - len(movable)
            else:
                out.dropped[side] += len(dirty)
    for side in ("val", "test"):
        ref = reference(side)
        scores = [overlap(fingerprints[i], ref) for i in getattr(out, side)]
        out.max_overlap[side] = max(scores, default=0.0)
        out.sharing_any[side] = sum(score > 0 for score in scores)
    return out
