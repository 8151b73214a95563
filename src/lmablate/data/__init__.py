"""The data pipeline: corpus -> document-level split -> tokenizer -> cached token streams.

``prepare(data_config)`` is the one entry point. Documents are split into training,
validation and (with ``test_fraction``) test *by document* (seeded), so no held-out text is ever
trained on; each side is
tokenized once in batches with the fast tokenizer, with the EOS token after every document, and
cached on disk under a key that changes when any input changes (see ``cache``). A second call
with the same inputs memory-maps the cache and skips reading and tokenizing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmablate.config.run import DataConfig, TrainedTokenizer
from lmablate.data.batches import IGNORE_INDEX, TrainBatches, ValidationSet, validation_set
from lmablate.data.cache import (
    cache_root,
    digest,
    documents_digest,
    read_cache,
    token_dtype,
    write_cache,
)
from lmablate.data.overlap import NgramIndex, decontaminate, near_duplicates
from lmablate.data.sources import Corpus, builtin_documents, describe_source, load_corpus
from lmablate.data.tokenizers import (
    Tokenizer,
    load_tokenizer,
    load_trained,
    save_backend,
    train_bpe,
)
from lmablate.errors import ConfigError, DataError

__all__ = [
    "IGNORE_INDEX",
    "PreparedData",
    "TrainBatches",
    "ValidationSet",
    "builtin_documents",
    "prepare",
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


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def split_documents(
    n_documents: int, val_fraction: float, seed: int, test_fraction: float = 0.0
) -> tuple[list[int], list[int], list[int]]:
    """Seeded document-level split: (train, validation, test) indices, each in source order.

    The validation documents are the first of one seeded permutation and the test documents
    the next, so adding a test split leaves the validation documents as they were."""
    n_val = max(1, round(n_documents * val_fraction))
    n_test = max(1, round(n_documents * test_fraction)) if test_fraction > 0 else 0
    if n_val + n_test >= n_documents:
        raise ValueError(
            f"{n_documents} documents leave none for training after {n_val} validation and "
            f"{n_test} test documents; lower val_fraction/test_fraction or add documents"
        )
    order = np.random.default_rng(seed).permutation(n_documents)
    held = n_val + n_test
    return (
        sorted(order[held:].tolist()),
        sorted(order[:n_val].tolist()),
        sorted(order[n_val:held].tolist()),
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


def prepare(
    cfg: DataConfig, progress: bool = True, log: Callable[[str], None] = lambda _: None
) -> PreparedData:
    """Token streams for a data config, from the cache when it holds them."""
    root = cache_root(cfg)
    corpus: Corpus | None = None
    if cfg.source == "hf":  # keyed by what names the documents, so a cache hit needs no network
        source_key: dict[str, Any] = {
            "source": "hf",
            "dataset": cfg.dataset,
            "subset": cfg.subset,
            "split": cfg.split,
            "text_field": cfg.text_field,
            "num_documents": cfg.num_documents,
        }
    else:  # local files are hashed by content: an edited file invalidates the cache
        corpus = load_corpus(cfg, progress)
        source_key = {"source": cfg.source, "documents": documents_digest(corpus.documents)}
    split_key: dict[str, Any] = {
        "val_fraction": cfg.val_fraction,
        "split_seed": cfg.split_seed,
        "contamination": cfg.contamination.model_dump(),
    }
    if cfg.test_fraction > 0:  # absent otherwise: caches made before test splits stay valid
        split_key["test_fraction"] = cfg.test_fraction

    def get_corpus() -> Corpus:
        nonlocal corpus
        if corpus is None:
            corpus = load_corpus(cfg, progress)
        return corpus

    if isinstance(cfg.tokenizer, TrainedTokenizer):
        vocab = cfg.tokenizer.train_bpe.vocab_size
        tok_path = root / "tokenizers" / digest([source_key, split_key, vocab]) / "tokenizer.json"
        if tok_path.is_file():
            tokenizer = load_trained(tok_path, f"bpe-{vocab}")
        else:
            documents = get_corpus().documents
            train_idx, _, _, _ = _split(documents, cfg)
            log(f"training a {vocab}-token BPE tokenizer on {len(train_idx)} documents")
            tokenizer = train_bpe([documents[i] for i in train_idx], vocab)
            tok_path.parent.mkdir(parents=True, exist_ok=True)
            save_backend(tokenizer, tok_path)
    else:
        tokenizer = load_tokenizer(cfg.tokenizer)

    directory = root / "tokens" / digest([source_key, split_key, tokenizer.identity()])
    cached = read_cache(directory)
    if cached is not None:
        meta, train, val, test = cached
        log(f"reusing token cache {directory}")
        return PreparedData(
            train, val, tokenizer, meta, directory, cache_hit=True, test_tokens=test
        )

    documents = get_corpus().documents
    train_idx, val_idx, test_idx, overlap_record = _split(documents, cfg)
    train = _token_stream(tokenizer, [documents[i] for i in train_idx], "train", progress)
    val = _token_stream(tokenizer, [documents[i] for i in val_idx], "validation", progress)
    test = (
        _token_stream(tokenizer, [documents[i] for i in test_idx], "test", progress)
        if test_idx
        else None
    )
    train_hashes = {_sha256(documents[i]) for i in train_idx}
    leaked = sum(_sha256(documents[i]) in train_hashes for i in val_idx)
    val_hashes = {_sha256(documents[i]) for i in val_idx}
    test_leaked = sum(_sha256(documents[i]) in train_hashes | val_hashes for i in test_idx)
    meta = {
        "source": describe_source(cfg),
        "source_key": source_key,
        "tokenizer": tokenizer.name,
        "tokenizer_vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
        # "test" only with a test split: caches and summaries without one read as before
        "documents": {
            "total": len(train_idx) + len(val_idx) + len(test_idx),
            "read": len(documents),  # before near-copies and dropped held-out documents
            "train": len(train_idx),
            "val": len(val_idx),
            **({"test": len(test_idx)} if test is not None else {}),
        },
        "tokens": {
            "train": len(train),
            "val": len(val),
            **({"test": len(test)} if test is not None else {}),
        },
        "characters": {"total": sum(len(documents[i]) for i in train_idx + val_idx + test_idx)},
        "replaced_characters": get_corpus().replaced_characters,
        "val_document_indices": val_idx,
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
            "duplicates_removed": get_corpus().duplicates_removed,
            "overlap": overlap_record,
        },
    }
    write_cache(directory, meta, train, val, test)
    log(f"wrote token cache {directory}")
    meta, train, val, test = read_cache(directory)  # type: ignore[misc]
    return PreparedData(train, val, tokenizer, meta, directory, cache_hit=False, test_tokens=test)


def _split(documents: list[str], cfg: DataConfig) -> tuple[list[int], list[int], list[int], dict]:
    """(train, validation, test) indices into ``documents`` after the overlap check, and its
    record: near-copies dropped from the corpus first, then the seeded split by document, then
    contaminated held-out documents moved to training (or dropped)."""
    check = cfg.contamination
    index = NgramIndex(check.ngram)
    fingerprints = [index.fingerprint(doc) for doc in documents]
    dropped = (
        set(near_duplicates(fingerprints, check.near_duplicates))
        if check.near_duplicates is not None
        else set()
    )
    kept = [i for i in range(len(documents)) if i not in dropped]
    try:
        train, val, test = split_documents(
            len(kept), cfg.val_fraction, cfg.split_seed, cfg.test_fraction
        )
    except ValueError as exc:
        raise ConfigError(f"data: {exc}") from None
    clean = decontaminate(
        fingerprints,
        [kept[i] for i in train],
        [kept[i] for i in val],
        [kept[i] for i in test],
        check.max_overlap,
        check.action,
    )
    if not clean.val or (test and not clean.test):
        side = "validation" if not clean.val else "test"
        raise DataError(
            f"every {side} document shares more than {check.max_overlap:.0%} of its "
            f"{check.ngram}-word n-grams with the documents before it in the split; the corpus "
            "repeats itself too much to hold any out (raise data.contamination.max_overlap, "
            "or use a corpus with more distinct documents)"
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
    return clean.train, clean.val, clean.test, record
