"""Which documents a run trains on and which it is scored on, source by source.

The evaluation side belongs to the study: every held-out source (``held_out: true``, the one
source of a single-source config) is read, near-copies are dropped across all of them, each is
split by document with the same seed, and held-out documents that overlap training by more than
``contamination.max_overlap`` are moved out (or dropped). None of that depends on a run's
weights, filters, tokenizer or training-only sources, so every run of a study scores the same
documents.

The training side may belong to a variant: the training documents of each source with a weight
above 0, plus every document of a training-only source (``held_out: false``) except those that
repeat or overlap an evaluation document (removed and counted: the contamination check of a
variant's own data), then the filters (``data/filters.py``) over all of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmablate.config.data import DataConfig
from lmablate.data.filters import apply_filters
from lmablate.data.overlap import NgramIndex, decontaminate, near_duplicates, overlap
from lmablate.data.sources import Corpus, load_corpus
from lmablate.data.split import split_documents
from lmablate.errors import ConfigError, DataError


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


@dataclass
class EvaluationSplit:
    """The study's documents: every held-out source read, split and decontaminated."""

    documents: list[str]
    owner: list[str]  # the source of each document
    fingerprints: list[np.ndarray]
    index: NgramIndex  # its word vocabulary: fingerprints of other documents must share it
    train: dict[str, list[int]]  # per held-out source: indices into documents
    val: dict[str, list[int]]
    test: dict[str, list[int]]
    record: dict[str, Any]
    replaced_characters: int = 0
    duplicates_removed: int = 0
    read: dict[str, int] = field(default_factory=dict)  # documents read per source

    def all(self, side: str) -> list[int]:
        return [i for indices in getattr(self, side).values() for i in indices]


def evaluation_split(
    cfg: DataConfig, corpora: dict[str, Corpus] | None = None, progress: bool = False
) -> EvaluationSplit:
    """Read (unless given), dedupe across sources, split each source, decontaminate."""
    held = {name: s for name, s in cfg.named_sources().items() if s.held_out}
    corpora = corpora or {name: load_corpus(s, progress) for name, s in held.items()}
    documents: list[str] = []
    owner: list[str] = []
    for name in held:
        documents += corpora[name].documents
        owner += [name] * len(corpora[name].documents)
    check = cfg.contamination
    index = NgramIndex(check.ngram)
    fingerprints = [index.fingerprint(doc) for doc in documents]
    dropped = set()
    if len(held) > 1:  # an exact repeat across sources (within one, load_corpus removed it)
        seen: set[str] = set()
        for i, doc in enumerate(documents):
            digest = sha256(doc)
            if digest in seen:
                dropped.add(i)
            seen.add(digest)
    if check.near_duplicates is not None:
        dropped |= set(near_duplicates(fingerprints, check.near_duplicates))
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for name in held:
        kept = [i for i in range(len(documents)) if owner[i] == name and i not in dropped]
        try:
            t, v, h = split_documents(
                len(kept), cfg.val_fraction, cfg.split_seed, cfg.test_fraction
            )
        except ValueError as exc:
            where = f"source {name!r}: " if cfg.sources else ""
            raise ConfigError(f"data: {where}{exc}") from None
        train += [kept[i] for i in t]
        val += [kept[i] for i in v]
        test += [kept[i] for i in h]
    clean = decontaminate(
        fingerprints, sorted(train), sorted(val), sorted(test), check.max_overlap, check.action
    )
    per_source = {
        side: {name: [i for i in getattr(clean, side) if owner[i] == name] for name in held}
        for side in ("train", "val", "test")
    }
    for name in held:
        for side, label in (("val", "validation"), ("test", "test")):
            if side == "test" and not test:
                continue
            if not per_source[side][name]:
                where = f"source {name!r}: every" if cfg.sources else "every"
                raise DataError(
                    f"{where} {label} document shares more than {check.max_overlap:.0%} of its "
                    f"{check.ngram}-word n-grams with the documents before it in the split; the "
                    "corpus repeats itself too much to hold any out (raise "
                    "data.contamination.max_overlap, or use a corpus with more distinct "
                    "documents)"
                )
    record = {
        "ngram": check.ngram,
        "near_duplicate_threshold": check.near_duplicates,
        "near_duplicates_removed": len(dropped),
        "max_overlap": check.max_overlap,
        "action": check.action,
        "moved_to_training": clean.moved,
        "dropped": clean.dropped,
        "largest_overlap_after": clean.max_overlap,
        "sharing_any_ngram": clean.sharing_any,
    }
    if not test:
        for key in ("moved_to_training", "dropped", "largest_overlap_after", "sharing_any_ngram"):
            record[key].pop("test", None)
    return EvaluationSplit(
        documents,
        owner,
        fingerprints,
        index,
        per_source["train"],
        per_source["val"],
        per_source["test"],
        record,
        replaced_characters=sum(c.replaced_characters for c in corpora.values()),
        duplicates_removed=sum(c.duplicates_removed for c in corpora.values()),
        read={name: len(corpora[name].documents) for name in held},
    )


@dataclass
class TrainingDocuments:
    """A run's training documents, per source with a weight above 0, in source order."""

    by_source: dict[str, list[str]]
    weights: dict[str, float]
    record: dict[str, Any]


def training_documents(
    cfg: DataConfig,
    split: EvaluationSplit,
    progress: bool = False,
    corpora: dict[str, Corpus] | None = None,
) -> TrainingDocuments:
    """``corpora``: training-only sources already read (the rest are read here)."""
    corpora = corpora or {}
    sources = cfg.named_sources()
    trained = {name: s for name, s in sources.items() if s.weight > 0}
    record: dict[str, Any] = {}
    texts: list[str] = []
    owner: list[str] = []
    extra = {name: s for name, s in trained.items() if not s.held_out}
    if extra:
        held_out = split.all("val") + split.all("test")
        hashes = {sha256(split.documents[i]) for i in held_out}
        reference: set[int] = set()
        for i in held_out:
            reference.update(split.fingerprints[i].tolist())
        index = split.index
        removed = {"exact": 0, "overlap": 0}
    for name, source in trained.items():
        if source.held_out:
            docs = [split.documents[i] for i in split.train[name]]
        else:
            docs = []
            corpus = corpora.get(name) or load_corpus(source, progress)
            for doc in corpus.documents:
                if sha256(doc) in hashes:
                    removed["exact"] += 1
                elif overlap(index.fingerprint(doc), reference) > cfg.contamination.max_overlap:
                    removed["overlap"] += 1
                else:
                    docs.append(doc)
        texts += docs
        owner += [name] * len(docs)
    if extra:
        record["training_removed_for_overlap"] = removed
    if cfg.filters.active:
        kept, dropped = apply_filters(texts, cfg.filters, cfg.contamination.ngram)
        record["filtered"] = {"kept": len(kept), "dropped": dropped}
        texts = [texts[i] for i in kept]
        owner = [owner[i] for i in kept]
    by_source = {
        name: [t for t, o in zip(texts, owner, strict=True) if o == name] for name in trained
    }
    empty = [name for name, docs in by_source.items() if not docs]
    if empty:
        raise DataError(
            f"data: source {empty[0]!r} has a weight above 0 but no training documents left "
            "after the split and the filters; loosen data.filters or give it weight 0"
        )
    return TrainingDocuments(by_source, {name: s.weight for name, s in trained.items()}, record)
