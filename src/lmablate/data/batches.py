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

Mixtures: with several training sources (``parts``), window ``g`` of the run (step s, row b:
``g = s * batch_size + b``) comes from the source that the golden-ratio sequence
``frac((g + 1) * 0.618...)`` falls in on the cumulative weights, so after any n windows each
source's share is within a few windows of its weight (a low-discrepancy sequence, not a
random draw), and the windows of a step are still a pure function of the step. A window never
crosses from one source into the next.

Several evaluation sets (``evaluation_sets``): each set's targets are cut into windows of its
own, and every target knows its document, so one pass gives each set's loss and bits per byte
from the per-document sums. With ``whole_documents`` every token of the first N documents of
a set is a target (an EOS in front gives the first token its context), so runs with different
tokenizers score exactly the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lmablate.errors import DataError
from lmablate.model.loss import IGNORE_INDEX

GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class Part:
    """A training source's tokens inside the training stream: ``tokens[start:end]``."""

    name: str
    start: int
    end: int
    weight: float


class TrainBatches:
    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        seq_len: int,
        data_seed: int,
        parts: list[Part] | None = None,
    ) -> None:
        self.parts = [p for p in parts or [] if p.weight > 0]
        short = [p for p in self.parts if p.end - p.start < seq_len + 1]
        if len(tokens) < seq_len + 1 or short:
            held = f"source {short[0].name!r}" if short else "the training documents"
            size = short[0].end - short[0].start if short else len(tokens)
            raise DataError(
                f"{held} hold(s) {size} tokens, fewer than one training window of seq_len + 1 "
                f"= {seq_len + 1}; use more documents (data.num_documents) or a shorter "
                "train.seq_len"
            )
        self.tokens, self.batch_size, self.seq_len = tokens, batch_size, seq_len
        self.data_seed = data_seed
        self._offsets = np.arange(seq_len + 1)
        if len(self.parts) > 1:
            weights = np.array([p.weight for p in self.parts], dtype=np.float64)
            self._edges = np.cumsum(weights / weights.sum())[:-1]
            self._starts = np.array([p.start for p in self.parts], dtype=np.int64)
            self._spans = np.array([p.end - p.start - seq_len for p in self.parts])

    def sources_at(self, steps: np.ndarray | int) -> np.ndarray:
        """The part index of every window of the given steps, (len(steps), batch_size)."""
        g = np.asarray(steps, dtype=np.int64).reshape(-1, 1) * self.batch_size + np.arange(
            self.batch_size
        )
        if len(self.parts) <= 1:
            return np.zeros(g.shape, dtype=np.int64)
        return np.searchsorted(self._edges, np.modf((g + 1) * GOLDEN)[0], side="right")

    def batch_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (batch_size, seq_len) int64, for optimizer step ``step``."""
        rng = np.random.default_rng([self.data_seed, step])
        if len(self.parts) > 1:
            source = self.sources_at(step)[0]
            starts = self._starts[source] + (rng.random(self.batch_size) * self._spans[source])
            starts = starts.astype(np.int64)
        else:
            low, high = (self.parts[0].start, self.parts[0].end) if self.parts else (0, None)
            high = len(self.tokens) if high is None else high
            starts = low + rng.integers(0, high - low - self.seq_len, size=self.batch_size)
        windows = torch.from_numpy(self.tokens[starts[:, None] + self._offsets].astype(np.int64))
        return windows[:, :-1], windows[:, 1:]  # (B, T) each

    def tokens_by_source(self, steps: int) -> dict[str, int]:
        """Target tokens each source contributes over steps 0..steps-1 (what was trained on)."""
        if not self.parts:
            return {}
        counts = np.bincount(self.sources_at(np.arange(steps)).ravel(), minlength=len(self.parts))
        return {p.name: int(n) * self.seq_len for p, n in zip(self.parts, counts, strict=True)}


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set inside a ValidationSet: documents first..first+n_documents-1."""

    name: str
    first_document: int
    n_documents: int
    n_targets: int
    n_bytes: int


@dataclass(frozen=True)
class ValidationSet:
    inputs: torch.Tensor  # (windows, seq_len) int64
    targets: torch.Tensor  # (windows, seq_len) int64, IGNORE_INDEX past the last target
    n_targets: int
    n_bytes: int  # UTF-8 bytes of the decoded targets, for bits per byte
    documents: torch.Tensor | None = None  # (windows, seq_len): each target's document, or -1
    n_documents: int = 0
    sets: tuple[EvalSet, ...] = ()  # with several evaluation sets (or whole documents)


def evaluation_sets(
    tokens: np.ndarray,
    parts: list[tuple[str, int, int]],
    seq_len: int,
    eval_tokens: int,
    decode: Callable[[list[int]], str],
    eos_id: int,
    whole_documents: int | None = None,
) -> ValidationSet:
    """The targets of every evaluation set (``(name, start, end)`` ranges of ``tokens``), each
    cut into windows of its own: the first ``eval_tokens`` targets of each, or with
    ``whole_documents`` every token of its first N documents."""
    pieces = []
    for name, start, end in parts:
        try:
            piece = validation_set(
                tokens[start:end], seq_len, eval_tokens, decode, eos_id, whole_documents
            )
        except DataError as exc:
            raise DataError(f"evaluation set {name!r}: {exc}") from None
        pieces.append((name, piece))
    sets, offset = [], 0
    owners = []
    for name, piece in pieces:
        sets.append(EvalSet(name, offset, piece.n_documents, piece.n_targets, piece.n_bytes))
        owners.append(torch.where(piece.documents >= 0, piece.documents + offset, -1))
        offset += piece.n_documents
    return ValidationSet(
        inputs=torch.cat([p.inputs for _, p in pieces]),
        targets=torch.cat([p.targets for _, p in pieces]),
        n_targets=sum(p.n_targets for _, p in pieces),
        n_bytes=sum(p.n_bytes for _, p in pieces),
        documents=torch.cat(owners),
        n_documents=offset,
        sets=tuple(sets),
    )


def validation_set(
    tokens: np.ndarray,
    seq_len: int,
    eval_tokens: int,
    decode: Callable[[list[int]], str],
    eos_id: int | None = None,
    whole_documents: int | None = None,
) -> ValidationSet:
    first_document = 0
    if whole_documents is not None:
        if eos_id is None:
            raise ValueError("whole-document evaluation needs the EOS id")
        ends = np.flatnonzero(tokens == eos_id)
        cut = int(ends[min(whole_documents, len(ends)) - 1]) + 1 if len(ends) else len(tokens)
        # an EOS in front: the first token of the first document is a target too
        tokens = np.concatenate([np.array([eos_id], dtype=tokens.dtype), tokens[:cut]])
        eval_tokens = cut
        first_document = -1  # the leading EOS is not a document boundary
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
        owner[:n_targets] = np.cumsum(tokens[:n_targets] == eos_id) + first_document
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
