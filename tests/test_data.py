"""The data pipeline: sources, split, tokenizers, cache, batches and validation targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import jsonl_corpus, run_cli, write_yaml

import lmablate.data as data_module
from lmablate.config.run import DataConfig
from lmablate.data import IGNORE_INDEX, TrainBatches, prepare, split_documents, validation_set
from lmablate.data.cache import token_dtype
from lmablate.data.sources import load_corpus
from lmablate.data.tokenizers import load_tokenizer, train_bpe
from lmablate.errors import DataError


def local_config(path: Path, tokenizer, **overrides) -> DataConfig:
    return DataConfig(
        source="local", path=str(path), tokenizer=tokenizer, num_documents=None, **overrides
    )


def documents_in(stream: np.ndarray, tokenizer) -> list[str]:
    """Decode a token stream back into its documents (split at EOS)."""
    ends = np.flatnonzero(stream == tokenizer.eos_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokenizer.decode(stream[s:e].tolist()) for s, e in zip(starts, ends, strict=True)]


# ------------------------------------------------------------------------------------- split


def test_validation_documents_never_reach_training(tmp_path, documents, tokenizer_dir):
    cfg = local_config(
        jsonl_corpus(tmp_path / "c.jsonl", documents),
        str(tokenizer_dir),
        val_fraction=0.2,
        split_seed=3,
    )
    prepared = prepare(cfg, progress=False)
    train_docs = documents_in(np.asarray(prepared.train_tokens), prepared.tokenizer)
    val_docs = documents_in(np.asarray(prepared.val_tokens), prepared.tokenizer)

    assert len(val_docs) == 12 and len(train_docs) == 48
    assert sorted(train_docs + val_docs) == sorted(documents)  # byte-level BPE round-trips
    train_text = "\x00".join(train_docs)
    for doc in val_docs:
        assert doc not in train_text
    assert prepared.meta["val_document_indices"] == split_documents(60, 0.2, 3)[1]


def test_split_is_seeded_and_covers_every_document():
    train, val, test = split_documents(101, 0.1, seed=0)
    assert len(val) == 10 and sorted(train + val) == list(range(101))
    assert test == [] and (train, val, test) == split_documents(101, 0.1, seed=0)
    assert val != split_documents(101, 0.1, seed=1)[1]
    assert len(split_documents(3, 0.1, seed=0)[1]) == 1  # never an empty validation side


def test_a_test_split_takes_other_documents_and_leaves_validation_alone():
    train, val, test = split_documents(101, 0.1, seed=0, test_fraction=0.2)
    assert len(test) == 20 and len(val) == 10 and len(train) == 71
    assert sorted(train + val + test) == list(range(101))
    assert val == split_documents(101, 0.1, seed=0)[1]  # the same validation documents
    with pytest.raises(ValueError, match="leave none for training"):
        split_documents(4, 0.5, seed=0, test_fraction=0.5)


def test_prepared_test_split_is_cached_and_leak_checked(tmp_path, documents):
    path = jsonl_corpus(tmp_path / "c.jsonl", documents[:40])
    cfg = DataConfig(
        source="local",
        path=str(path),
        tokenizer={"train_bpe": {"vocab_size": 300}},
        num_documents=None,
        val_fraction=0.1,
        test_fraction=0.2,
    )
    first = prepare(cfg, progress=False)
    assert first.meta["documents"] == {"total": 40, "read": 40, "train": 28, "val": 4, "test": 8}
    assert first.meta["leakage"]["test_documents_in_training_or_validation"] == 0
    assert len(first.test_tokens) == first.meta["tokens"]["test"] > 0
    again = prepare(cfg, progress=False)
    assert again.cache_hit and np.array_equal(again.test_tokens, first.test_tokens)
    no_test = prepare(cfg.model_copy(update={"test_fraction": 0.0}), progress=False)
    assert no_test.test_tokens is None and no_test.cache_dir != first.cache_dir


# ---------------------------------------------------------------------------- eval targets


@pytest.mark.parametrize("eval_tokens", [1000, 10_000])
def test_every_seq_len_scores_the_same_targets(eval_tokens):
    tokens = np.random.default_rng(0).integers(0, 500, size=3001).astype(np.uint16)

    def decode(ids: list[int]) -> str:
        return "".join(chr(65 + i % 26) * (1 + i % 3) for i in ids)

    sets = {
        seq_len: validation_set(tokens, seq_len, eval_tokens, decode)
        for seq_len in (16, 100, 256, 512, 4096)
    }
    expected_targets = tokens[1 : min(eval_tokens, 3000) + 1].astype(np.int64)
    for seq_len, val in sets.items():
        targets = val.targets[val.targets != IGNORE_INDEX].numpy()
        np.testing.assert_array_equal(targets, expected_targets, err_msg=f"seq_len {seq_len}")
        assert val.n_targets == len(expected_targets)
        assert val.n_bytes == sets[16].n_bytes
        # each target is the token right after its input: flattened, targets lead inputs by one
        flat_inputs, flat_targets = val.inputs.flatten(), val.targets.flatten()
        real = flat_targets != IGNORE_INDEX
        np.testing.assert_array_equal(flat_inputs[real].numpy(), tokens[: val.n_targets])
        assert val.inputs.shape[1] == seq_len


def test_validation_set_needs_a_target():
    with pytest.raises(DataError, match="too few to score"):
        validation_set(np.array([5], dtype=np.uint16), 8, 100, lambda ids: "")


# ----------------------------------------------------------------------------------- cache


def test_cache_is_reused_without_retokenizing(tmp_path, documents, tokenizer_dir, monkeypatch):
    cfg = local_config(jsonl_corpus(tmp_path / "c.jsonl", documents), str(tokenizer_dir))
    first = prepare(cfg, progress=False)
    assert not first.cache_hit

    def fail(*args, **kwargs):
        raise AssertionError("a cache hit must not tokenize again")

    monkeypatch.setattr(data_module, "_token_stream", fail)
    messages: list[str] = []
    second = prepare(cfg, progress=False, log=messages.append)
    assert second.cache_hit and second.cache_dir == first.cache_dir
    assert any("reusing token cache" in m for m in messages)
    np.testing.assert_array_equal(second.train_tokens, first.train_tokens)


def test_cache_key_changes_with_every_input(tmp_path, documents, tokenizer_dir):
    corpus = jsonl_corpus(tmp_path / "c.jsonl", documents)
    base = local_config(corpus, str(tokenizer_dir))
    directories = {prepare(base, progress=False).cache_dir}
    other_tokenizer = tmp_path / "other-tokenizer"
    train_bpe(documents, vocab_size=300).save(other_tokenizer)
    for change in ({"val_fraction": 0.2}, {"split_seed": 1}, {"tokenizer": str(other_tokenizer)}):
        cfg = base.model_copy(update=change)
        directories.add(prepare(cfg, progress=False).cache_dir)
    jsonl_corpus(corpus, [*documents[:-1], documents[-1] + " An edit."])  # same file, new text
    edited = prepare(base, progress=False)
    assert not edited.cache_hit
    directories.add(edited.cache_dir)
    assert len(directories) == 5


def test_token_dtype_fits_the_vocabulary():
    assert token_dtype(49_152) == np.uint16
    assert token_dtype(65_536) == np.uint16
    assert token_dtype(128_256) == np.uint32


# ------------------------------------------------------------------------------- tokenizers


def test_bpe_training_is_deterministic(documents):
    first, second = train_bpe(documents, 700), train_bpe(list(documents), 700)
    assert first.backend.to_str() == second.backend.to_str()
    assert first.vocab_size == 700 and first.eos_token == "<|endoftext|>"
    text = documents[0]
    assert first.decode(first.encode(text)) == text


def test_trained_tokenizer_is_cached_and_learned_from_training_documents_only(tmp_path, documents):
    cfg = local_config(
        jsonl_corpus(tmp_path / "c.jsonl", documents), {"train_bpe": {"vocab_size": 400}}
    )
    prepared = prepare(cfg, progress=False)
    train_idx, _, _ = split_documents(len(documents), cfg.val_fraction, cfg.split_seed)
    direct = train_bpe([documents[i] for i in train_idx], 400)
    assert prepared.tokenizer.backend.to_str() == direct.backend.to_str()
    messages: list[str] = []
    again = prepare(cfg, progress=False, log=messages.append)
    assert again.cache_hit and not any("training" in m for m in messages)


def test_tokenizer_json_file_and_directory_agree(tokenizer_dir, documents):
    from_dir = load_tokenizer(str(tokenizer_dir))
    from_file = load_tokenizer(str(tokenizer_dir / "tokenizer.json"))
    assert from_dir.encode(documents[1]) == from_file.encode(documents[1])
    assert from_dir.eos_id == from_file.eos_id == 0


def test_tokenizer_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no tokenizer"):
        load_tokenizer(str(tmp_path / "empty"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"not a valid tokenizer\.json"):
        load_tokenizer(str(tmp_path / "bad.json"))


def test_hub_tokenizer_id_loads_from_the_hub_cache_offline(tmp_path, documents):
    """A hub id goes through transformers' hub resolution; here it resolves to a local cache."""
    repo = tmp_path / "hf" / "hub" / "models--TestOrg--tiny-lm"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    train_bpe(documents, 300).save(snapshot)
    (snapshot / "config.json").write_text('{"model_type": "llama", "vocab_size": 300}')
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    corpus = jsonl_corpus(tmp_path / "c.jsonl", documents)
    config = write_yaml(
        tmp_path / "run.yaml",
        f"""\
        data: {{source: local, path: {corpus}, tokenizer: TestOrg/tiny-lm}}
        """,
    )
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    result = run_cli("data", "inspect", str(config), "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tokenizer"]["name"] == "TestOrg/tiny-lm"
    assert report["tokenizer"]["vocab_size"] == 300

    missing = write_yaml(
        tmp_path / "missing.yaml",
        f"""\
        data: {{source: local, path: {corpus}, tokenizer: TestOrg/not-cached}}
        """,
    )
    result = run_cli("data", "inspect", str(missing), env=env)
    assert result.returncode == 2
    assert "TestOrg/not-cached" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------- sources


def test_hf_source_streams_a_hub_layout_folder(hub_dataset_dir, documents):
    cfg = DataConfig(
        source="hf", dataset=str(hub_dataset_dir), subset="cosmopedia-v2", num_documents=40
    )
    assert load_corpus(cfg, progress=False).documents == documents[:40]


def test_hf_source_missing_text_field(hub_dataset_dir):
    cfg = DataConfig(source="hf", dataset=str(hub_dataset_dir), text_field="content")
    with pytest.raises(DataError, match=r"no field 'content'.*prompt, text, audience"):
        load_corpus(cfg, progress=False)


def test_unreachable_hub_dataset_is_a_clear_error(tmp_path):
    config = write_yaml(
        tmp_path / "run.yaml",
        """\
        data: {source: hf, dataset: NoSuchOrg/no-such-corpus, subset: x,
               tokenizer: {train_bpe: {vocab_size: 300}}}
        """,
    )
    result = run_cli("data", "inspect", str(config), env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert "NoSuchOrg/no-such-corpus" in result.stderr
    assert "source: local" in result.stderr and "Traceback" not in result.stderr


def test_local_text_file_splits_documents_at_blank_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("First document,\nstill first.\n\nSecond one.\n\n\n  \nThird.\n")
    corpus = load_corpus(DataConfig(source="local", path=str(path)), progress=False)
    assert corpus.documents == ["First document,\nstill first.", "Second one.", "Third."]


def test_local_directory_is_one_document_per_file(tmp_path):
    (tmp_path / "docs" / "nested").mkdir(parents=True)
    (tmp_path / "docs" / "b.txt").write_text("bravo")
    (tmp_path / "docs" / "a.txt").write_text("alpha")
    (tmp_path / "docs" / "nested" / "c.txt").write_text("charlie")
    (tmp_path / "docs" / "notes.md").write_text("ignored")
    corpus = load_corpus(DataConfig(source="local", path=str(tmp_path / "docs")), progress=False)
    assert corpus.documents == ["alpha", "bravo", "charlie"]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_local_record_files(tmp_path, suffix, documents):
    path = tmp_path / f"corpus{suffix}"
    docs = documents[:5]
    if suffix == ".jsonl":
        jsonl_corpus(path, docs, field="body")
    elif suffix == ".json":
        path.write_text(json.dumps([{"body": d} for d in docs]))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"body": docs}), path)
    cfg = DataConfig(source="local", path=str(path), text_field="body", num_documents=4)
    assert load_corpus(cfg, progress=False).documents == docs[:4]


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 one\n\nna\xefve two".encode("latin-1"))
    corpus = load_corpus(DataConfig(source="local", path=str(path)), progress=False)
    assert corpus.replaced_characters == 2
    assert corpus.documents[0] == "caf\ufffd one"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "", "0 distinct non-empty document"),
        ("blank.txt", "\n\n   \n\n", "0 distinct non-empty document"),
        ("one.txt", "just one document", "1 distinct non-empty document"),
        ("corpus.csv", "a,b\n", "unsupported file type '.csv'"),
        ("broken.jsonl", '{"text": "ok"}\n{broken\n', "could not read"),
    ],
)
def test_unusable_local_corpora(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_corpus(DataConfig(source="local", path=str(path)), progress=False)


def test_repeated_documents_are_dropped_so_none_can_leak(tmp_path, documents, tokenizer_dir):
    docs = documents[:20]
    repeated = [*docs, *docs[:7], docs[3]]  # eight exact repeats
    cfg = local_config(
        jsonl_corpus(tmp_path / "c.jsonl", repeated), str(tokenizer_dir), val_fraction=0.5
    )
    prepared = prepare(cfg, progress=False)
    assert prepared.meta["documents"]["total"] == 20
    assert prepared.meta["leakage"]["duplicates_removed"] == 8
    assert prepared.meta["leakage"]["val_documents_in_training"] == 0
    assert load_corpus(cfg, progress=False).documents == docs


def test_empty_directory_corpus(tmp_path):
    (tmp_path / "docs").mkdir()
    with pytest.raises(DataError, match=r"no \.txt files"):
        load_corpus(DataConfig(source="local", path=str(tmp_path / "docs")), progress=False)


def test_builtin_corpus_is_real_prose_and_stable():
    docs = load_corpus(DataConfig(source="builtin", num_documents=None), progress=False).documents
    assert len(docs) > 100
    assert sum(map(len, docs)) > 300_000
    assert all(len(d) >= 100 for d in docs)
    assert docs == load_corpus(DataConfig(source="builtin", num_documents=None)).documents
    assert len(load_corpus(DataConfig(source="builtin", num_documents=50)).documents) == 50


# ---------------------------------------------------------------------------------- batches


def test_train_batches_are_a_pure_function_of_seed_and_step():
    tokens = np.arange(10_000, dtype=np.uint16)
    batches = TrainBatches(tokens, batch_size=4, seq_len=32, data_seed=7)
    inputs, targets = batches.batch_at(5)
    assert inputs.shape == targets.shape == (4, 32) and inputs.dtype == torch.int64
    torch.testing.assert_close(targets[:, :-1], inputs[:, 1:])
    torch.testing.assert_close(targets, inputs + 1)  # windows are contiguous slices
    again = TrainBatches(tokens, batch_size=4, seq_len=32, data_seed=7).batch_at(5)[0]
    assert torch.equal(inputs, again)
    assert not torch.equal(inputs, batches.batch_at(6)[0])
    assert not torch.equal(inputs, TrainBatches(tokens, 4, 32, data_seed=8).batch_at(5)[0])
    assert int(inputs.max()) + 1 < len(tokens)


def test_corpus_smaller_than_one_window():
    with pytest.raises(DataError, match="fewer than one training window"):
        TrainBatches(np.arange(64, dtype=np.uint16), batch_size=2, seq_len=64, data_seed=0)


def test_a_corpus_that_is_not_text_is_a_data_error(tmp_path):
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20)
    with pytest.raises(DataError, match=r"image.txt is not UTF-8 text: byte 0 is not valid"):
        load_corpus(DataConfig(source="local", path=str(binary), num_documents=None))


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"text": 5}, r"record 1: 'text' holds int 5, not text"),
        ({"text": None}, r"record 1: 'text' holds NoneType None, not text"),
        ({"text": ["a", "b"]}, r"record 1: 'text' holds list \['a', 'b'\], not text"),
    ],
)
def test_a_record_whose_text_is_not_a_string_is_a_data_error(tmp_path, record, message):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=message):
        load_corpus(DataConfig(source="local", path=str(path), num_documents=None))


def test_validation_targets_that_decode_to_nothing_are_a_data_error():
    with pytest.raises(DataError, match="decode to no text"):
        validation_set(np.array([5, 6, 7], dtype=np.uint16), 8, 100, lambda ids: "")


def test_hub_libraries_log_lines_are_held_back_while_they_work_for_us():
    """An unreachable Hub makes huggingface_hub log every retry; lmablate's own message is
    the one a user should read."""
    import io
    import logging

    from lmablate.data.tokenizers import HUB_LOGGERS, hub_quiet

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    parent = logging.getLogger("huggingface_hub")
    parent.addHandler(handler)
    try:
        retry = logging.getLogger("huggingface_hub.utils._http")
        with hub_quiet():
            retry.warning("Retrying in 8s [Retry 5/5].")
            logging.getLogger("datasets.load").warning("a datasets note")
        retry.warning("outside")
    finally:
        parent.removeHandler(handler)
    assert stream.getvalue() == "outside\n"
    assert "datasets" in HUB_LOGGERS
