"""Reference losses: what count models of the training split score on the validation targets.

A language model that does not beat these has learned no more than token frequencies (unigram)
or which token tends to follow which (bigram), whatever its loss looks like on its own. All
three are estimated from the training token stream alone (EOS between documents, as training
sees it) and scored on exactly the targets a run is evaluated on, each target predicted from the
token before it:

- **uniform**: ln V, V the tokenizer's vocabulary (padding rows of the embedding excluded).
- **unigram**: add-one (Laplace) smoothed token frequencies, ``(c(w) + 1) / (N + V)``.
- **bigram**: interpolated absolute discounting (Ney, Essen & Kneser 1994) with discount
  ``D = 0.75`` over the add-one unigram:
  ``p(w | v) = max(c(v, w) - D, 0) / c(v) + D * n(v) / c(v) * p_unigram(w)``, where ``c(v)``
  counts bigrams that start with v and ``n(v)`` the distinct tokens seen after v; a context never
  seen in training falls back to the unigram.

Each is reported in nats per target and in bits per byte of the targets' UTF-8 text, the same
units as a run's validation loss.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DISCOUNT = 0.75
SMOOTHING = {
    "uniform": "ln V over the tokenizer's vocabulary",
    "unigram": "add-one smoothed training-split token frequencies",
    "bigram": (
        f"interpolated absolute discounting (D = {DISCOUNT}) of training-split bigram counts "
        "over the add-one unigram"
    ),
}


class CountModels:
    """The unigram and bigram count models of a training token stream, to score any
    (context, target) pairs: the reference losses here, and text samples' fluency under a
    yardstick that favours no configuration."""

    def __init__(self, train_tokens: np.ndarray, vocab_size: int) -> None:
        train = np.asarray(train_tokens, dtype=np.int64)
        self.vocab_size = vocab_size
        counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
        self.unigram = (counts + 1.0) / (len(train) + vocab_size)
        # bigram counts as sorted pair codes v * V + w, looked up by binary search
        self.pairs, self.pair_counts = np.unique(
            train[:-1] * vocab_size + train[1:], return_counts=True
        )
        first = self.pairs // vocab_size
        self.context_total = np.bincount(first, weights=self.pair_counts, minlength=vocab_size)
        self.context_types = np.bincount(first, minlength=vocab_size).astype(np.float64)

    def unigram_nll(self, targets: np.ndarray) -> np.ndarray:
        return -np.log(self.unigram[np.asarray(targets, dtype=np.int64)])

    def bigram_nll(self, contexts: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Nats of each target given the token before it."""
        contexts = np.asarray(contexts, dtype=np.int64)
        targets = np.asarray(targets, dtype=np.int64)
        if not len(self.pairs):  # a one-token training stream: no bigram seen
            return self.unigram_nll(targets)
        codes = contexts * self.vocab_size + targets
        at = np.minimum(np.searchsorted(self.pairs, codes), len(self.pairs) - 1)
        pair = np.where(self.pairs[at] == codes, self.pair_counts[at], 0).astype(np.float64)
        total, types = self.context_total[contexts], self.context_types[contexts]
        seen = total > 0
        safe = np.where(seen, total, 1.0)
        p_uni = self.unigram[targets]
        p_bi = np.where(
            seen,
            np.maximum(pair - DISCOUNT, 0.0) / safe + DISCOUNT * types / safe * p_uni,
            p_uni,
        )
        return -np.log(p_bi)

    def bigram_perplexity(self, ids: list[int]) -> float | None:
        """exp(mean bigram nats) of ``ids[1:]``, each given the token before it."""
        if len(ids) < 2:
            return None
        ids_array = np.asarray(ids, dtype=np.int64)
        return math.exp(float(self.bigram_nll(ids_array[:-1], ids_array[1:]).mean()))


def reference_losses(
    train_tokens: np.ndarray,
    contexts: np.ndarray,
    targets: np.ndarray,
    vocab_size: int,
    n_bytes: int,
) -> dict[str, Any]:
    """Mean nats per target (and bits per byte) of the three count models on ``targets``, each
    predicted from the token in ``contexts`` at the same position."""
    models = CountModels(train_tokens, vocab_size)
    nats = {
        "uniform": math.log(vocab_size),
        "unigram": float(models.unigram_nll(targets).mean()),
        "bigram": float(models.bigram_nll(contexts, targets).mean()),
    }
    scale = len(targets) / (math.log(2) * n_bytes)
    return {
        name: {"loss": value, "bpb": value * scale, "smoothing": SMOOTHING[name]}
        for name, value in nats.items()
    }


def references_for(train_tokens: np.ndarray, scored: Any, vocab_size: int) -> dict[str, Any]:
    """``reference_losses`` on the targets of a ``ValidationSet`` (validation or test)."""
    mask = scored.targets.reshape(-1) >= 0
    return reference_losses(
        train_tokens,
        scored.inputs.reshape(-1)[mask].numpy(),
        scored.targets.reshape(-1)[mask].numpy(),
        vocab_size,
        scored.n_bytes,
    )
