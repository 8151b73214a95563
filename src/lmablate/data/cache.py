"""The on-disk token cache: one tokenized corpus per (source, documents, split, tokenizer).

Layout under the cache root (``data.cache_dir``, else ``$LMABLATE_CACHE``, else
``~/.cache/lmablate``)::

    tokens/<key>/train.bin  val.bin   flat token streams, uint16 (vocab < 65536) or uint32
    tokens/<key>/meta.json            counts, dtype, tokenizer; written last
    tokenizers/<key>/tokenizer.json   BPE tokenizers trained on a corpus

A directory is built under a temporary name and renamed into place, so a reader never sees a
half-written cache and two processes preparing the same data do not corrupt each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lmablate.config.run import DataConfig

CACHE_FORMAT = 3  # 3: n-gram overlap check (near-copies dropped, held-out decontaminated)


def cache_root(cfg: DataConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    env = os.environ.get("LMABLATE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lmablate"


def digest(value: Any) -> str:
    """A short stable hash of any JSON-serializable value (dict key order does not matter)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def documents_digest(documents: list[str]) -> str:
    h = hashlib.sha256()
    for doc in documents:
        encoded = doc.encode("utf-8", errors="surrogatepass")
        h.update(len(encoded).to_bytes(8, "little"))
        h.update(encoded)
    return h.hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def read_cache(
    directory: Path,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(meta, train, val, test or None) memory-mapped, or None when there is no complete cache."""
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != CACHE_FORMAT:
        return None
    dtype = np.dtype(meta["dtype"])
    names = ["train", "val"] + (["test"] if meta["tokens"].get("test") else [])
    streams = [np.memmap(directory / f"{name}.bin", dtype=dtype, mode="r") for name in names]
    return meta, streams[0], streams[1], streams[2] if len(streams) > 2 else None


def write_cache(
    directory: Path,
    meta: dict[str, Any],
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray | None = None,
) -> None:
    """Write the streams and meta.json into a temporary directory, then rename it into place."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        streams = {"train": train, "val": val, **({"test": test} if test is not None else {})}
        for name, stream in streams.items():
            stream.tofile(tmp / f"{name}.bin")
        meta = {**meta, "format": CACHE_FORMAT, "dtype": train.dtype.name}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if directory.exists():  # an outdated format, or one another process just finished
            shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
