"""Shared fixtures: every corpus and tokenizer a test uses is built here, offline."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from helpers import jsonl_corpus

from lmablate.data import builtin_documents
from lmablate.data.overlap import NgramIndex, near_duplicates
from lmablate.data.tokenizers import train_bpe


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's caches, and none may reach the Hugging Face Hub."""
    root = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LMABLATE_CACHE", str(root / "lmablate"))
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # a report compiles its paper only in the tests that ask for it (test_latex.py)
    monkeypatch.setenv("LMABLATE_LATEX", "none")


@pytest.fixture(scope="session")
def documents() -> list[str]:
    """60 distinct real-prose documents: none a near-copy of another (the builtin topics repeat
    some sections under other headings), so the overlap check keeps every one of them."""
    index = NgramIndex(8)
    docs = builtin_documents()
    copies = set(near_duplicates([index.fingerprint(d) for d in docs], 0.8))
    return [d for i, d in enumerate(docs) if i not in copies][:60]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, documents) -> Path:
    """A tokenizer directory as ``save_pretrained`` writes it (tokenizer.json + config)."""
    directory = tmp_path_factory.mktemp("tokenizer")
    train_bpe(documents, vocab_size=512).save(directory)
    return directory


@pytest.fixture
def corpus(tmp_path, documents) -> Path:
    """The documents as a local JSON Lines corpus."""
    return jsonl_corpus(tmp_path / "corpus.jsonl", documents)


@pytest.fixture
def hub_dataset_dir(tmp_path, documents) -> Path:
    """A folder laid out like the smollm-corpus hub repository, one config, parquet shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "smollm-corpus"
    (root / "cosmopedia-v2").mkdir(parents=True)
    half = len(documents) // 2
    for shard, docs in enumerate((documents[:half], documents[half:])):
        table = pa.table(
            {
                "prompt": [f"prompt {i}" for i in range(len(docs))],
                "text": docs,
                "audience": ["students"] * len(docs),
            }
        )
        pq.write_table(table, root / "cosmopedia-v2" / f"train-0000{shard}-of-00002.parquet")
    (root / "README.md").write_text(
        textwrap.dedent("""\
        ---
        configs:
        - config_name: cosmopedia-v2
          data_files:
          - split: train
            path: cosmopedia-v2/train-*
        ---
        A local stand-in for HuggingFaceTB/smollm-corpus.
        """)
    )
    return root
