"""The data pipeline: corpus -> document-level split -> tokenizer -> cached token streams.

``prepare(data_config)`` is the one entry point. Documents are split into training,
validation and (with ``test_fraction``) test *by document* (seeded), so no held-out text is ever
trained on; each side is
tokenized once in batches with the fast tokenizer, with the EOS token after every document, and
cached on disk under a key that changes when any input changes (see ``cache``). A second call
with the same inputs memory-maps the cache and skips reading and tokenizing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmablate.config.data import SINGLE_SOURCE, DataConfig, TrainedTokenizer
from lmablate.data.batches import (
    IGNORE_INDEX,
    EvalSet,
    Part,
    TrainBatches,
    ValidationSet,
    evaluation_sets,
    validation_set,
)
from lmablate.data.cache import (
    cache_root,
    digest,
    documents_digest,
    read_cache,
    token_dtype,
    write_cache,
)
from lmablate.data.filters import register_filter
from lmablate.data.mixture import (
    EvaluationSplit,
    evaluation_split,
    sha256,
    training_documents,
)
from lmablate.data.sources import (
    Corpus,
    builtin_code_documents,
    builtin_documents,
    describe_source,
    load_corpus,
)
from lmablate.data.split import split_documents
from lmablate.data.tokenizers import (
    Tokenizer,
    load_tokenizer,
    load_trained,
    save_backend,
    train_bpe,
)

__all__ = [
    "IGNORE_INDEX",
    "EvalSet",
    "PreparedData",
    "TrainBatches",
    "ValidationSet",
    "builtin_code_documents",
    "builtin_documents",
    "prepare",
    "register_filter",
    "split_documents",
    "validation_set",
]

ENCODE_BATCH = 256  # documents per encode_batch call: enough to keep the Rust threads busy


@dataclass
class PreparedData:
    train_tokens: np.ndarray
    val_tokens: np.ndarray
    tokenizer: Tokenizer
    meta: dict[str, Any]
    cache_dir: Path
    cache_hit: bool
    test_tokens: np.ndarray | None = None  # None without a test split

    def train_parts(self) -> list[Part] | None:
        """Each training source's range of the training stream (None: one source)."""
        parts = self.meta.get("train_parts")
        return [Part(*p) for p in parts] if parts else None

    def batches(self, batch_size: int, seq_len: int, data_seed: int) -> TrainBatches:
        return TrainBatches(self.train_tokens, batch_size, seq_len, data_seed, self.train_parts())

    def scored(self, side: str, seq_len: int, eval_tokens: int) -> ValidationSet | None:
        """The validation (``side="val"``) or test targets of every evaluation set."""
        tokens = self.val_tokens if side == "val" else self.test_tokens
        if tokens is None:
            return None
        parts = self.meta.get(f"{side}_parts") or [[SINGLE_SOURCE, 0, len(tokens)]]
        return evaluation_sets(
            tokens,
            [(name, start, end) for name, start, end, *_ in parts],
            seq_len,
            eval_tokens,
            self.tokenizer.decode,
            self.tokenizer.eos_id,
            self.meta.get("eval_documents"),
        )


def _token_stream(
    tokenizer: Tokenizer, documents: list[str], desc: str, progress: bool
) -> np.ndarray:
    dtype = token_dtype(tokenizer.vocab_size)
    batches = range(0, len(documents), ENCODE_BATCH)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"tokenizing {desc}", unit="batch", leave=False, disable=None)
    pieces = []
    eos = np.array([tokenizer.eos_id], dtype=dtype)
    for start in batches:
        for ids in tokenizer.encode_batch(documents[start : start + ENCODE_BATCH]):
            pieces += [np.asarray(ids, dtype=dtype), eos]
    return np.concatenate(pieces)


def _source_key(source, corpus: Corpus | None) -> dict[str, Any]:
    if source.source == "hf":  # keyed by what names the documents: a cache hit needs no network
        return {
            "source": "hf",
            "dataset": source.dataset,
            "subset": source.subset,
            "split": source.split,
            "text_field": source.text_field,
            "num_documents": source.num_documents,
        }
    # local files are hashed by content: an edited file invalidates the cache
    return {"source": source.source, "documents": documents_digest(corpus.documents)}


def prepare(
    cfg: DataConfig, progress: bool = True, log: Callable[[str], None] = lambda _: None
) -> PreparedData:
    """Token streams for a data config, from the cache when it holds them."""
    root = cache_root(cfg)
    sources = cfg.named_sources()
    held = {name: s for name, s in sources.items() if s.held_out}
    corpora: dict[str, Corpus] = {
        name: load_corpus(s, progress) for name, s in held.items() if s.source != "hf"
    }
    keys = {name: _source_key(s, corpora.get(name)) for name, s in held.items()}
    # one source keeps the key it always had, so its caches stay valid
    source_key: dict[str, Any] = keys[SINGLE_SOURCE] if not cfg.sources else {"sources": keys}
    split_key: dict[str, Any] = {
        "val_fraction": cfg.val_fraction,
        "split_seed": cfg.split_seed,
        "contamination": cfg.contamination.model_dump(),
    }
    if cfg.test_fraction > 0:  # absent otherwise: caches made before test splits stay valid
        split_key["test_fraction"] = cfg.test_fraction
    # training-only sources outside the hub are keyed by content too: read once, used twice
    extra = {
        name: load_corpus(s, progress)
        for name, s in sources.items()
        if not s.held_out and s.weight > 0 and s.source != "hf"
    }
    train_key = _train_key(cfg, sources, extra)
    split: EvaluationSplit | None = None

    def get_split() -> EvaluationSplit:
        nonlocal split
        if split is None:
            for name, s in held.items():
                if name not in corpora:
                    corpora[name] = load_corpus(s, progress)
            split = evaluation_split(cfg, corpora)
        return split

    if isinstance(cfg.tokenizer, TrainedTokenizer):  # trained on the study's training split,
        vocab = cfg.tokenizer.train_bpe.vocab_size  # whatever a run's weights and filters
        tok_path = root / "tokenizers" / digest([source_key, split_key, vocab]) / "tokenizer.json"
        if tok_path.is_file():
            tokenizer = load_trained(tok_path, f"bpe-{vocab}")
        else:
            study = get_split()
            documents = [study.documents[i] for i in study.all("train")]
            log(f"training a {vocab}-token BPE tokenizer on {len(documents)} documents")
            tokenizer = train_bpe(documents, vocab)
            tok_path.parent.mkdir(parents=True, exist_ok=True)
            save_backend(tokenizer, tok_path)
    else:
        tokenizer = load_tokenizer(cfg.tokenizer)

    parts = [source_key, split_key, tokenizer.identity()] + ([train_key] if train_key else [])
    directory = root / "tokens" / digest(parts)
    cached = read_cache(directory)
    if cached is not None:
        log(f"reusing token cache {directory}")
        return _prepared(cached, tokenizer, cfg, directory, cache_hit=True)

    study = get_split()
    chosen = training_documents(cfg, study, progress, extra)
    meta = _tokenize_into(cfg, study, chosen, tokenizer, progress)
    meta = {"source": _describe(cfg), "source_key": source_key, **meta}
    train, val, test = meta.pop("_streams")
    write_cache(directory, meta, train, val, test)
    log(f"wrote token cache {directory}")
    return _prepared(read_cache(directory), tokenizer, cfg, directory, cache_hit=False)


def _prepared(cached, tokenizer: Tokenizer, cfg: DataConfig, directory: Path, cache_hit: bool):
    """PreparedData from a read cache; the scoring mode (whole documents or not) comes from the
    config, since it changes no stream."""
    meta, train, val, test = cached
    meta = {**meta, "eval_documents": cfg.eval_documents}
    return PreparedData(train, val, tokenizer, meta, directory, cache_hit, test_tokens=test)


def _describe(cfg: DataConfig) -> str:
    if not cfg.sources:
        return describe_source(cfg)
    return "; ".join(f"{name}: {describe_source(s)}" for name, s in cfg.named_sources().items())


def _train_key(cfg: DataConfig, sources, extra: dict[str, Corpus]) -> dict[str, Any] | None:
    """What selects the training documents beyond the split (None: the whole training split
    of one source, as every cache before mixtures). ``extra``: the training-only sources read."""
    if not cfg.sources and not cfg.filters.active and cfg.max_train_tokens is None:
        return None
    return {
        "weights": {name: s.weight for name, s in sources.items()},
        "extra": {
            name: _source_key(s, extra.get(name))
            for name, s in sources.items()
            if not s.held_out and s.weight > 0
        },
        "filters": cfg.filters.model_dump(),
        "max_train_tokens": cfg.max_train_tokens,
    }


def _tokenize_into(
    cfg: DataConfig,
    study: EvaluationSplit,
    chosen,
    tokenizer: Tokenizer,
    progress: bool,
) -> dict[str, Any]:
    """Token streams and the data meta of one run's documents."""
    dtype = token_dtype(tokenizer.vocab_size)
    shares = {name: w / sum(chosen.weights.values()) for name, w in chosen.weights.items()}
    streams, train_parts, start = [], [], 0
    for name, docs in chosen.by_source.items():
        stream = _token_stream(
            tokenizer, docs, f"{name} train" if cfg.sources else "train", progress
        )
        if cfg.max_train_tokens is not None:
            stream = stream[: max(1, round(shares[name] * cfg.max_train_tokens))]
        streams.append(stream)
        train_parts.append([name, start, start + len(stream), chosen.weights[name]])
        start += len(stream)
    train = np.concatenate(streams).astype(dtype, copy=False)
    held_sides = {}
    for side, label in (("val", "validation"), ("test", "test")):
        pieces, side_parts, offset = [], [], 0
        for name, indices in getattr(study, side).items():
            if not indices:
                continue
            docs = [study.documents[i] for i in indices]
            desc = f"{name} {label}" if cfg.sources else label
            stream = _token_stream(tokenizer, docs, desc, progress)
            pieces.append(stream)
            side_parts.append([name, offset, offset + len(stream), len(docs)])
            offset += len(stream)
        held_sides[side] = (np.concatenate(pieces) if pieces else None, side_parts)
    val, val_parts = held_sides["val"]
    test, test_parts = held_sides["test"]
    val_docs, test_docs = study.all("val"), study.all("test")
    train_hashes = {sha256(d) for docs in chosen.by_source.values() for d in docs}
    leaked = sum(sha256(study.documents[i]) in train_hashes for i in val_docs)
    val_hashes = {sha256(study.documents[i]) for i in val_docs}
    test_leaked = sum(sha256(study.documents[i]) in train_hashes | val_hashes for i in test_docs)
    n_train_docs = sum(len(d) for d in chosen.by_source.values())
    scored = val_docs + test_docs
    meta: dict[str, Any] = {
        "tokenizer": tokenizer.name,
        "tokenizer_vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
        # "test" only with a test split: caches and summaries without one read as before
        "documents": {
            "total": n_train_docs + len(scored),
            "read": len(study.documents),  # before near-copies and dropped held-out documents
            "train": n_train_docs,
            "val": len(val_docs),
            **({"test": len(test_docs)} if test is not None else {}),
        },
        "tokens": {
            "train": len(train),
            "val": len(val),
            **({"test": len(test)} if test is not None else {}),
        },
        "characters": {
            "total": sum(len(d) for docs in chosen.by_source.values() for d in docs)
            + sum(len(study.documents[i]) for i in scored)
        },
        "replaced_characters": study.replaced_characters,
        "val_document_indices": val_docs,
        "leakage": {
            "method": (
                f"SHA-256 of every document's text, and the share of each held-out document's "
                f"distinct {cfg.contamination.ngram}-word n-grams found in training (test: in "
                "training or validation)"
            ),
            "val_documents_in_training": leaked,
            **(
                {"test_documents_in_training_or_validation": test_leaked}
                if test is not None
                else {}
            ),
            "duplicates_removed": study.duplicates_removed,
            "overlap": study.record,
            **chosen.record,
        },
        "_streams": (train, val, test),
    }
    if cfg.sources or cfg.filters.active or cfg.max_train_tokens is not None:
        meta["train_parts"] = train_parts
        meta["val_parts"] = val_parts
        if test is not None:
            meta["test_parts"] = test_parts
        meta["sources"] = {
            name: {
                "weight": s.weight,
                "share": shares.get(name, 0.0),
                "held_out": s.held_out,
                "documents_read": study.read.get(name),
                "train_documents": len(chosen.by_source.get(name, [])),
                "train_tokens": next((p[2] - p[1] for p in train_parts if p[0] == name), 0),
                "val_documents": len(study.val.get(name, [])),
                **({"test_documents": len(study.test.get(name, []))} if test is not None else {}),
            }
            for name, s in cfg.named_sources().items()
        }
    return meta
