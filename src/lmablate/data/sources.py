"""Corpus sources: where documents come from.

- ``hf``: stream the first ``num_documents`` records of a Hugging Face dataset with ``datasets``
  (a hub id, or a local folder laid out like a hub dataset repository).
- ``local``: a .txt file (documents separated by blank lines), a directory of .txt files (one
  document per file), or a .jsonl/.json/.parquet file of records (read through ``datasets``).
- ``builtin``: the documentation topics that ship with every CPython (``pydoc_data``), split at
  their section headings: real English prose that needs no download.
- ``builtin_code``: the standard library's own top-level modules (``*.py`` beside ``os.py``),
  split at their top-level statements: real Python source, a second domain that needs no
  download either. Its chunks come in one fixed shuffled order, so the first N documents sample
  the whole library rather than its first modules alphabetically.

Text is decoded as UTF-8; a few undecodable bytes become U+FFFD and are counted, but a file
that is not text (a NUL byte, or over a fifth of its characters undecodable) is an error naming
the file and the first bad byte. A record whose text field is not a string is a data error.
Empty documents and exact repeats of an earlier document are dropped (repeats are counted).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lmablate.config.run import DataConfig
from lmablate.data.tokenizers import hub_quiet
from lmablate.errors import DataError

RECORD_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class Corpus:
    documents: list[str]
    replaced_characters: int = 0  # U+FFFD inserted while decoding non-UTF-8 bytes
    duplicates_removed: int = 0  # exact repeats of an earlier document, dropped


def load_corpus(cfg: DataConfig, progress: bool = True) -> Corpus:
    """Read the documents a data config names, without empty ones, in source order."""
    if cfg.source == "builtin":
        corpus = Corpus(builtin_documents())
    elif cfg.source == "builtin_code":
        corpus = Corpus(builtin_code_documents())
    elif cfg.source == "local":
        corpus = _local_corpus(Path(cfg.path).expanduser(), cfg)  # type: ignore[arg-type]
    else:
        corpus = Corpus(_hub_documents(cfg, progress))
    documents = [doc for doc in corpus.documents if doc.strip()][: cfg.num_documents]
    # an exact repeat could land on both sides of the train/validation split: keep the first
    unique = list(dict.fromkeys(documents))
    if len(unique) < 2:
        raise DataError(
            f"{describe_source(cfg)} holds {len(unique)} distinct non-empty document(s); at "
            "least 2 are needed (validation documents are held out from training)"
        )
    return Corpus(unique, corpus.replaced_characters, len(documents) - len(unique))


def describe_source(cfg: DataConfig) -> str:
    if cfg.source == "builtin":
        return "the builtin corpus"
    if cfg.source == "builtin_code":
        return "the builtin code corpus"
    if cfg.source == "local":
        return f"local corpus {cfg.path}"
    subset = f" ({cfg.subset})" if cfg.subset else ""
    return f"dataset {cfg.dataset}{subset}, split {cfg.split}"


# ----------------------------------------------------------------------------------- builtin

_HEADING = re.compile(r"\n(?=[^\n]+\n[*=\-~^]{3,}\n)")  # a line underlined with *** / === / ---


def builtin_documents(min_chars: int = 600) -> list[str]:
    """CPython's documentation topics, one document per section of at least ``min_chars``."""
    from pydoc_data.topics import topics

    documents = []
    for name in sorted(topics):
        current = ""
        for section in _HEADING.split(topics[name]):
            section = section.strip()
            if not section:
                continue
            if len(current) < min_chars:  # too short to stand alone: merge with the next
                current = f"{current}\n\n{section}".strip()
            else:
                documents.append(current)
                current = section
        if current:
            documents.append(current)
    return documents


_TOP_LEVEL = re.compile(r"\n(?=(?:def |class |async def |@)\S)")  # a statement at column 0


def builtin_code_documents(min_chars: int = 600) -> list[str]:
    """The standard library's top-level modules, cut before each top-level definition and
    merged up to ``min_chars``, in a fixed shuffled order (seed 0)."""
    import random
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    documents = []
    for path in sorted(stdlib.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):  # an unreadable module is left out, not guessed
            continue
        current = ""
        for piece in _TOP_LEVEL.split(text):
            piece = piece.strip("\n")
            if not piece.strip():
                continue
            if len(current) < min_chars:
                current = f"{current}\n\n{piece}".strip("\n")
            else:
                documents.append(current)
                current = piece
        if current.strip():
            documents.append(current)
    if not documents:
        raise DataError(f"the standard library at {stdlib} holds no readable .py modules")
    random.Random(0).shuffle(documents)
    return documents


# ------------------------------------------------------------------------------------- local


MAX_REPLACED = 0.2  # share of undecodable characters beyond which a file is not text


def _read_text(path: Path) -> tuple[str, int]:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError as exc:
        first = exc.start
    text = raw.decode("utf-8", errors="replace")
    replaced = text.count("\ufffd")
    nul = b"\x00" in raw
    if nul or replaced > MAX_REPLACED * max(1, len(text)):
        raise DataError(
            f"local corpus file {path} is not UTF-8 text: byte {first} is not valid UTF-8 "
            f"({replaced:,} undecodable characters{', and NUL bytes' if nul else ''})"
        )
    return text, replaced


def _where_malformed(path: Path) -> str | None:
    """Where a record file stops being its format: the first line of a .jsonl that is not a
    JSON value, or the missing magic bytes of a .parquet; None when that check finds nothing."""
    import json

    if path.suffix.lower() == ".parquet":
        with path.open("rb") as f:
            head = f.read(4)
            f.seek(max(0, path.stat().st_size - 4))
            tail = f.read(4)
        if head != b"PAR1" or tail != b"PAR1":
            at = "start" if head != b"PAR1" else "end"
            return f"not a Parquet file (no PAR1 magic bytes at its {at})"
        return None
    if path.suffix.lower() != ".jsonl":
        return None
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                return f"line {number} is not JSON ({exc.msg}, column {exc.colno})"
    return None


def _local_corpus(path: Path, cfg: DataConfig) -> Corpus:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"local corpus {path} is a directory with no .txt files")
        texts = [_read_text(f) for f in itertools.islice(files, cfg.num_documents)]
        return Corpus([t for t, _ in texts], sum(n for _, n in texts))
    suffix = path.suffix.lower()
    if suffix == ".txt":
        text, replaced = _read_text(path)
        return Corpus([doc.strip("\n") for doc in re.split(r"\n\s*\n", text)], replaced)
    if suffix in RECORD_FORMATS:
        import datasets

        try:
            with hub_quiet():  # the reader's own log line would repeat our message
                stream = datasets.load_dataset(
                    RECORD_FORMATS[suffix], data_files=str(path), split="train", streaming=True
                )
                return Corpus(list(_texts(stream, cfg, str(path), progress=False)))
        except DataError:
            raise
        except Exception as exc:  # datasets raises many types for a malformed file
            raise DataError(
                f"could not read {path} as {suffix} records: {_where_malformed(path) or exc}"
            ) from exc
    raise DataError(
        f"local corpus {path}: unsupported file type {suffix or '(none)'!r}; use .txt, .jsonl, "
        ".json, .parquet or a directory of .txt files"
    )


# --------------------------------------------------------------------------------------- hub


def _texts(records: Iterable[dict], cfg: DataConfig, where: str, progress: bool) -> Iterator[str]:
    records = itertools.islice(records, cfg.num_documents)
    if progress:
        from tqdm.auto import tqdm

        records = tqdm(
            records,
            total=cfg.num_documents,
            desc="reading documents",
            unit="doc",
            leave=False,
            disable=None,
        )
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(
                f"{where}: record {index} is {type(record).__name__}, not an object with a "
                f"{cfg.text_field!r} field"
            )
        if cfg.text_field not in record:
            raise DataError(
                f"{where}: records have no field {cfg.text_field!r} (data.text_field); "
                f"fields present: {', '.join(map(str, record))}"
            )
        text = record[cfg.text_field]
        if not isinstance(text, str):
            shown = repr(text) if len(repr(text)) <= 40 else f"{repr(text)[:37]}..."
            raise DataError(
                f"{where}: record {index}: {cfg.text_field!r} holds "
                f"{type(text).__name__} {shown}, not text"
            )
        yield text


def _hub_documents(cfg: DataConfig, progress: bool) -> list[str]:
    import datasets

    try:
        with hub_quiet():
            stream = datasets.load_dataset(
                cfg.dataset, name=cfg.subset, split=cfg.split, streaming=True
            )
            return list(_texts(stream, cfg, describe_source(cfg), progress))
    except DataError:
        raise
    except Exception as exc:  # connection, not-found, auth, bad config name: all user-fixable
        raise DataError(
            f"could not load {describe_source(cfg)} with the datasets library: "
            f"{type(exc).__name__}: {exc}\nIf the Hugging Face Hub is unreachable from this "
            "machine, download the documents once elsewhere and use source: local with path: "
            "<file or folder>, or source: builtin for the offline corpus."
        ) from exc
