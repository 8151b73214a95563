"""Contamination by n-gram overlap, and the count-model reference losses, against hand checks."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from helpers import jsonl_corpus

from lmablate.config.run import DataConfig
from lmablate.data import builtin_documents, prepare
from lmablate.data.overlap import NgramIndex, decontaminate, near_duplicates, overlap
from lmablate.data.references import DISCOUNT, CountModels, reference_losses


def _prose(rng: np.random.Generator, words: int) -> str:
    vocab = [f"w{i}" for i in range(3000)]
    return " ".join(rng.choice(vocab, size=words))


def _planted_corpus(seed: int = 0) -> tuple[list[str], list[int]]:
    """40 distinct documents, then 8 near-copies of some of them under another heading with a
    few words changed: no copy is byte-identical to its source."""
    rng = np.random.default_rng(seed)
    originals = [f"Section {i}\n\n{_prose(rng, 300)}" for i in range(40)]
    copies = []
    for k in range(8):
        words = originals[k * 5].split("\n\n")[1].split()
        for at in rng.choice(len(words), size=6, replace=False):
            words[at] = "changed"
        copies.append(f"Another heading {k}\n\n{' '.join(words)}")
    return originals + copies, list(range(40, 48))


def test_overlap_is_the_share_of_a_documents_ngrams_in_the_reference():
    index = NgramIndex(3)
    a = index.fingerprint("one two three four five")  # 3 trigrams
    b = index.fingerprint("ONE two three, four! six")  # shares 'one two three', 'two three four'
    assert len(a) == 3 and overlap(b, set(a.tolist())) == pytest.approx(2 / 3)
    short = index.fingerprint("one two")  # shorter than n: its whole word sequence is one gram
    assert len(short) == 1 and overlap(index.fingerprint("One, two."), set(short.tolist())) == 1


def test_planted_near_copies_are_found_where_exact_hashes_see_none():
    documents, planted = _planted_corpus()
    sha = [hashlib.sha256(d.encode()).hexdigest() for d in documents]
    assert len(set(sha)) == len(documents)  # an exact-hash check finds nothing
    index = NgramIndex(8)
    fingerprints = [index.fingerprint(d) for d in documents]
    assert near_duplicates(fingerprints, 0.8) == planted


def test_contaminated_held_out_documents_move_to_training_until_none_is_left():
    documents, planted = _planted_corpus()
    index = NgramIndex(8)
    fingerprints = [index.fingerprint(d) for d in documents]
    # the sources of the copies in training, two copies in validation and one in test
    train = [i for i in range(40)] + planted[3:]
    val, test = [planted[0], planted[1], 31], [planted[2]]
    train = [i for i in train if i != 31]
    moved = decontaminate(fingerprints, train, val, test, max_overlap=0.2)
    assert moved.val == [31] and moved.test == []
    assert moved.moved == {"val": 2, "test": 1} and moved.max_overlap["val"] < 0.2
    assert sorted(moved.train) == sorted(train + planted[:3])
    dropped = decontaminate(fingerprints, train, val, test, max_overlap=0.2, action="drop")
    assert dropped.dropped == {"val": 2, "test": 1} and sorted(dropped.train) == sorted(train)


def test_a_test_document_echoing_validation_is_contaminated():
    index = NgramIndex(8)
    rng = np.random.default_rng(1)
    base = [_prose(rng, 200) for _ in range(4)]
    fingerprints = [index.fingerprint(d) for d in [*base, base[2] + " tail words here"]]
    out = decontaminate(fingerprints, [0, 1], [2], [4], max_overlap=0.2)
    assert out.val == [2] and out.test == [] and out.dropped["test"] == 1
    assert out.moved["test"] == 0 and out.train == [0, 1]  # moved, it would leak into validation


def test_prepare_removes_planted_copies_and_records_it(tmp_path):
    documents, _ = _planted_corpus()
    cfg = DataConfig(
        source="local",
        path=str(jsonl_corpus(tmp_path / "c.jsonl", documents)),
        tokenizer={"train_bpe": {"vocab_size": 300}},
        num_documents=None,
        val_fraction=0.2,
        test_fraction=0.1,
    )
    meta = prepare(cfg, progress=False).meta
    check = meta["leakage"]["overlap"]
    assert check["near_duplicates_removed"] == 8 and meta["documents"]["total"] == 40
    assert meta["documents"]["read"] == 48
    assert max(check["largest_overlap_after"].values()) <= check["max_overlap"]
    # without the check the copies stay, some held out sharing over 80% of their 8-grams
    loose_cfg = DataConfig(
        **{**cfg.model_dump(), "contamination": {"near_duplicates": None, "max_overlap": 0.99}}
    )
    loose = prepare(loose_cfg, progress=False).meta
    assert max(loose["leakage"]["overlap"]["largest_overlap_after"].values()) > 0.8
    assert loose["documents"]["total"] == 48
    assert loose["leakage"]["val_documents_in_training"] == 0  # the hash check is blind to them


def test_the_builtin_corpus_comes_out_clean():
    documents = list(dict.fromkeys(builtin_documents()))
    index = NgramIndex(8)
    fingerprints = [index.fingerprint(d) for d in documents]
    dropped = set(near_duplicates(fingerprints, 0.8))
    assert len(dropped) >= 20  # its topics repeat sections under other headings
    kept = [f for i, f in enumerate(fingerprints) if i not in dropped]
    assert near_duplicates(kept, 0.8) == []


def test_reference_losses_against_a_hand_computation():
    train = np.array([0, 1, 2, 1, 2, 0, 1, 1])  # bigrams: 01 12 21 12 20 01 11
    contexts, targets = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 0])
    vocab = 4
    refs = reference_losses(train, contexts, targets, vocab, n_bytes=10)
    counts = {0: 2, 1: 4, 2: 2, 3: 0}
    uni = {w: (c + 1) / (8 + 4) for w, c in counts.items()}
    # p(1|0): c(0)=2, c(0,1)=2, one follower type
    p10 = (2 - DISCOUNT) / 2 + DISCOUNT * 1 / 2 * uni[1]
    # p(2|1): c(1)=3 (12, 12, 11), c(1,2)=2, follower types {2, 1}
    p21 = (2 - DISCOUNT) / 3 + DISCOUNT * 2 / 3 * uni[2]
    # p(3|2): c(2)=2 (21, 20), unseen pair: only the discounted mass
    p32 = DISCOUNT * 2 / 2 * uni[3]
    p03 = uni[0]  # context 3 never seen: the unigram
    bigram = -np.mean(np.log([p10, p21, p32, p03]))
    unigram = -np.mean(np.log([uni[1], uni[2], uni[3], uni[0]]))
    assert refs["uniform"]["loss"] == pytest.approx(math.log(4))
    assert refs["unigram"]["loss"] == pytest.approx(unigram)
    assert refs["bigram"]["loss"] == pytest.approx(bigram)
    assert refs["bigram"]["bpb"] == pytest.approx(bigram * 4 / (math.log(2) * 10))


def test_the_bigram_is_a_distribution_for_every_seen_context():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 12, size=500)
    vocab = 12
    for context in range(vocab):
        contexts = np.full(vocab, context)
        targets = np.arange(vocab)
        # the mean log-probability over all targets, undone: the probabilities sum to one
        refs = reference_losses(train, contexts[:1], targets[:1], vocab, 1)
        assert refs["bigram"]["loss"] > 0
        probs = [
            math.exp(
                -reference_losses(train, contexts[:1], targets[t : t + 1], vocab, 1)["bigram"][
                    "loss"
                ]
            )
            for t in range(vocab)
        ]
        assert sum(probs) == pytest.approx(1.0)


def test_a_texts_bigram_perplexity_is_the_bigram_reference_on_its_own_tokens():
    rng = np.random.default_rng(3)
    train, text = rng.integers(0, 7, 200), rng.integers(0, 7, 30)
    refs = reference_losses(train, text[:-1], text[1:], 7, n_bytes=30)
    models = CountModels(train, 7)
    assert models.bigram_perplexity(text.tolist()) == pytest.approx(
        math.exp(refs["bigram"]["loss"])
    )
    assert models.bigram_perplexity(text[:1].tolist()) is None  # nothing to predict
