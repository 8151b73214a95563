"""The seeded document-level split into training, validation and test."""

from __future__ import annotations

import numpy as np


def split_documents(
    n_documents: int, val_fraction: float, seed: int, test_fraction: float = 0.0
) -> tuple[list[int], list[int], list[int]]:
    """Seeded document-level split: (train, validation, test) indices, each in source order.

    The validation documents are the first of one seeded permutation and the test documents
    the next, so adding a test split leaves the validation documents as they were."""
    n_val = max(1, round(n_documents * val_fraction))
    n_test = max(1, round(n_documents * test_fraction)) if test_fraction > 0 else 0
    if n_val + n_test >= n_documents:
        raise ValueError(
            f"{n_documents} documents leave none for training after {n_val} validation and "
            f"{n_test} test documents; lower val_fraction/test_fraction or add documents"
        )
    order = np.random.default_rng(seed).permutation(n_documents)
    held = n_val + n_test
    return (
        sorted(order[held:].tolist()),
        sorted(order[:n_val].tolist()),
        sorted(order[n_val:held].tolist()),
    )
