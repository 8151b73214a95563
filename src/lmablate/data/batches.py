"""Training batches and the fixed validation targets.

Training: each step draws ``batch_size`` random windows of ``seq_len + 1`` tokens from the
training stream. The windows of step ``s`` are a pure function of ``(data_seed, s)``, so a
resumed run sees exactly the batches it would have seen, and two runs with the same data_seed,
batch size and seq_len see the same data (paired comparisons).

Validation: the first ``eval_tokens`` targets of the validation stream (tokens 1..N, each
predicted from the tokens before it), cut into non-overlapping windows of the run's seq_len with
the tail of the last window masked. Every seq_len and batch size therefore scores exactly the
same target tokens; only the context a target sees depends on seq_len. Each target also carries
the index of the validation document it belongs to (documents end at EOS; the EOS that ends a
document is its last target), so an evaluation can report a loss per document: what a paired
bootstrap over documents resamples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lmablate.errors import DataError
from lmablate.model.loss import IGNORE_INDEX


class TrainBatches:
    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, data_seed: int) -> None:
        if len(tokens) < seq_len + 1:
            raise DataError(
                f"the training documents hold {len(tokens)} tokens, fewer than one training "
                f"window of seq_len + 1 = {seq_len + 1}; use more documents "
                "(data.num_documents) or a shorter train.seq_len"
            )
        self.tokens, self.batch_size, self.seq_len = tokens, batch_size, seq_len
        self.data_seed = data_seed
        self._offsets = np.arange(seq_len + 1)

    def batch_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (batch_size, seq_len) int64, for optimizer step ``step``."""
        rng = np.random.default_rng([self.data_seed, step])
        starts = rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)
        windows = torch.from_numpy(self.tokens[starts[:, None] + self._offsets].astype(np.int64))
        return windows[:, :-1], windows[:, 1:]  # (B, T) each


@dataclass(frozen=True)
class ValidationSet:
    inputs: torch.Tensor  # (windows, seq_len) int64
    targets: torch.Tensor  # (windows, seq_len) int64, IGNORE_INDEX past the last target
    n_targets: int
    n_bytes: int  # UTF-8 bytes of the decoded targets, for bits per byte
    documents: torch.Tensor | None = None  # (windows, seq_len): each target's document, or -1
    n_documents: int = 0


def validation_set(
    tokens: np.ndarray,
    seq_len: int,
    eval_tokens: int,
    decode: Callable[[list[int]], str],
    eos_id: int | None = None,
) -> ValidationSet:
    n_targets = min(eval_tokens, len(tokens) - 1)
    if n_targets < 1:
        raise DataError(
            f"the validation documents hold {len(tokens)} token(s), too few to score one target; "
            "use more documents or a larger data.val_fraction"
        )
    windows = math.ceil(n_targets / seq_len)
    inputs = np.zeros(windows * seq_len, dtype=np.int64)
    targets = np.full(windows * seq_len, IGNORE_INDEX, dtype=np.int64)
    inputs[:n_targets] = tokens[:n_targets]
    targets[:n_targets] = tokens[1 : n_targets + 1]
    # padding sits after every real target in its window, so causal attention never sees it
    n_bytes = len(decode(tokens[1 : n_targets + 1].tolist()).encode("utf-8"))
    if n_bytes == 0:
        raise DataError(
            f"the {n_targets} validation target token(s) decode to no text (special tokens "
            "only?), so bits per byte cannot be measured; use more documents or a larger "
            "data.val_fraction"
        )
    documents, n_documents = None, 0
    if eos_id is not None:  # target j follows input j: its document is the EOS count up to j
        owner = np.full(windows * seq_len, -1, dtype=np.int64)
        owner[:n_targets] = np.cumsum(tokens[:n_targets] == eos_id)
        documents = torch.from_numpy(owner).view(windows, seq_len)
        n_documents = int(owner[n_targets - 1]) + 1
    return ValidationSet(
        inputs=torch.from_numpy(inputs).view(windows, seq_len),
        targets=torch.from_numpy(targets).view(windows, seq_len),
        n_targets=n_targets,
        n_bytes=n_bytes,
        documents=documents,
        n_documents=n_documents,
    )
