"""What the benchmarks share: a tokenizer the size of the reference study's and documents,
both built offline, and a timer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from lmablate.data import builtin_documents
from lmablate.data.tokenizers import Tokenizer, train_bpe

VOCAB = 49_152  # HuggingFaceTB/SmolLM-135M's vocabulary


def smollm_sized_tokenizer() -> Tokenizer:
    """A byte-level BPE trained on the builtin corpus, padded with reserved tokens to 49,152."""
    tokenizer = train_bpe(builtin_documents(), 8192)
    tokenizer.backend.add_tokens([f"<reserved_{i}>" for i in range(VOCAB - tokenizer.vocab_size)])
    return tokenizer


def reference_sized_documents(count: int = 500) -> list[str]:
    """``count`` distinct documents of a few thousand characters (the reference study's 500)."""
    base = builtin_documents()
    return [f"{base[i % len(base)]}\n\n(copy {i // len(base)})" for i in range(count)]


def timed(
    run: Callable[[], object], rounds: int, before: Callable[[], None] = lambda: None
) -> tuple[float, object]:
    """Median seconds of ``run()`` over ``rounds``, ``before()`` untimed ahead of each."""
    seconds, result = [], None
    for _ in range(rounds):
        before()
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result
