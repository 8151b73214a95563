"""Filters of training documents: length bounds, near-duplicate removal and named ``keep``
functions (``data.filters``), applied to the training side of a split only, so that every run
of a study scores the same held-out documents whatever its filters.

A filter of your own is one function of the text and one call, before the study is loaded::

    import lmablate.data
    lmablate.data.register_filter("no_tables", lambda text: "|---" not in text, "no tables")

and a study names it in ``data: {filters: {keep: [no_tables]}}``. Like a registered model
component it exists only in the process that registered it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from lmablate.config.components import FILTERS, register_filter
from lmablate.config.data import FilterConfig
from lmablate.data.overlap import NgramIndex, near_duplicates

__all__ = ["apply_filters", "gopher", "register_filter"]

_WORD = re.compile(r"\S+")
_BULLET = re.compile(r"^\s*[\u2022\u2023\u25e6\u2043\u2219*\-]\s")


def gopher(text: str) -> bool:
    """Rae et al. 2021 (Gopher), appendix A.1.1, the quality rules that need no word list."""
    words = _WORD.findall(text)
    if not 50 <= len(words) <= 100_000:
        return False
    mean_length = sum(map(len, words)) / len(words)
    if not 3 <= mean_length <= 10:
        return False
    symbols = text.count("#") + text.count("...") + text.count("\u2026")
    if symbols / len(words) > 0.1:
        return False
    lines = [line for line in text.splitlines() if line.strip()]
    if lines:
        if sum(bool(_BULLET.match(line)) for line in lines) > 0.9 * len(lines):
            return False
        ellipsis = sum(line.rstrip().endswith(("...", "\u2026")) for line in lines)
        if ellipsis > 0.3 * len(lines):
            return False
    alphabetic = sum(any(c.isalpha() for c in word) for word in words)
    return alphabetic >= 0.8 * len(words)


def apply_filters(
    documents: Sequence[str], filters: FilterConfig, ngram: int
) -> tuple[list[int], dict[str, Any]]:
    """Indices of the documents the filters keep, in order, and how many each filter dropped
    (each counted once, by the first filter that drops it: lengths, named filters, then
    near-duplicates among the documents still kept)."""
    kept = list(range(len(documents)))
    dropped: dict[str, int] = {}

    def keep_where(label: str, rule) -> None:
        nonlocal kept
        before = len(kept)
        kept = [i for i in kept if rule(documents[i])]
        dropped[label] = before - len(kept)

    if filters.min_chars is not None:
        keep_where(
            f"shorter than {filters.min_chars} characters", lambda t: len(t) >= filters.min_chars
        )
    if filters.max_chars is not None:
        keep_where(
            f"longer than {filters.max_chars} characters", lambda t: len(t) <= filters.max_chars
        )
    for name in filters.keep:
        keep_where(f"dropped by {name}", FILTERS.builder(name))
    if filters.near_duplicates is not None:
        index = NgramIndex(ngram)
        fingerprints = [index.fingerprint(documents[i]) for i in kept]
        copies = set(near_duplicates(fingerprints, filters.near_duplicates))
        dropped[f"near-duplicates (>= {filters.near_duplicates:.0%} of n-grams)"] = len(copies)
        kept = [i for k, i in enumerate(kept) if k not in copies]
    return kept, dropped
