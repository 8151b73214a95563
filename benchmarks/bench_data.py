"""Data preparation speed: lmablate's batched tokenization against per-document encoding, and
the cost of a token-cache hit.

The corpus is the reference study's size (500 documents of a few thousand characters, built
offline from the builtin corpus); the tokenizer a byte-level BPE of 8,192 tokens trained on the
builtin corpus (encoding work per character hardly depends on the vocabulary's size; a
vocabulary padded with tens of thousands of added tokens, as the other benchmarks use to size
their models, would make loading it unrepresentatively slow). Three measurements, in one
process:

- naive: ``tokenizer.encode(document)`` one document at a time through ``transformers``'
  ``PreTrainedTokenizerFast`` (what a notebook does), the ids gathered into one stream;
- lmablate: the token stream as ``prepare`` builds it (``encode_batch_fast`` on the Rust
  tokenizer, 256 documents a call, written into a typed numpy array);
- cache hit: ``prepare`` of the same data config again, which memory-maps the cached streams
  (a local JSONL corpus, the slower case: its content is hashed to find the cache).

Both tokenizations must give the same ids; the script checks it.

    python benchmarks/bench_data.py [--rounds 3] [--documents 500]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from common import reference_sized_documents, timed
from tokenizers import Tokenizer as Backend

from lmablate.config.run import DataConfig
from lmablate.data import _token_stream, builtin_documents, prepare
from lmablate.data.tokenizers import Tokenizer, train_bpe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--documents", type=int, default=500)
    args = parser.parse_args()
    from transformers import PreTrainedTokenizerFast

    trained = train_bpe(builtin_documents(), 8192)
    documents = reference_sized_documents(args.documents)
    tokenizer, wrapped = trained, None

    def fresh() -> None:  # a new tokenizer each round: its word cache starts empty, as in use
        nonlocal tokenizer, wrapped
        tokenizer = Tokenizer(Backend.from_str(trained.backend.to_str()), trained.eos_id, "bpe")
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend)

    def naive() -> np.ndarray:
        ids: list[int] = []
        for document in documents:
            ids += [*wrapped.encode(document, add_special_tokens=False), tokenizer.eos_id]
        return np.array(ids)

    naive_s, naive_ids = timed(naive, args.rounds, fresh)
    ours_s, our_ids = timed(
        lambda: _token_stream(tokenizer, documents, "", False), args.rounds, fresh
    )
    if not np.array_equal(naive_ids, our_ids.astype(np.int64)):
        raise SystemExit("the two tokenizations differ: the benchmark is void")
    tokens = len(our_ids)

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
        tokenizer_dir = Path(tmp) / "tokenizer"
        tokenizer.save(tokenizer_dir)
        cfg = DataConfig(
            source="local",
            path=str(corpus),
            tokenizer=str(tokenizer_dir),
            num_documents=None,
            cache_dir=str(Path(tmp) / "cache"),
        )
        miss_s, _ = timed(lambda: prepare(cfg, progress=False), 1)
        hit_s, hit = timed(lambda: prepare(cfg, progress=False), args.rounds)
        assert hit.cache_hit

    print(f"{len(documents)} documents, {tokens:,} tokens, vocabulary {tokenizer.vocab_size:,}")
    print(f"  naive per-document encode   {tokens / naive_s:12,.0f} tokens/s")
    print(f"  lmablate batched encode     {tokens / ours_s:12,.0f} tokens/s")
    print(f"  batched vs naive:           {naive_s / ours_s:.2f}x (target >= 5)")
    print(f"  prepare, cache miss:        {miss_s:.2f} s (read, hash, split, tokenize, write)")
    print(f"  prepare, cache hit:         {hit_s:.3f} s (target < 1 s)")


if __name__ == "__main__":
    main()
