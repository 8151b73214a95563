"""Cross-entropy of the LM head, computed a slice of rows at a time.

With a 49,152-token vocabulary, the logits of one batch of 8 x 512 tokens are 805 MB in float32,
and the usual ``cross_entropy(hidden @ W.T, targets)`` writes them, their log-softmax and its
gradient in full: three passes over memory much larger than any cache, each a fresh allocation.
Here the forward pass walks the rows in slices of ``CHUNK_BYTES`` of logits and, for each slice,
computes the loss and at once the gradients with respect to the hidden states and the head's
weight (softmax minus one-hot, times the slice's inputs); backward only scales them. No full
logits tensor ever exists. The loss is the same mean over scored targets as ``F.cross_entropy``
with ``ignore_index`` (a test checks loss and gradients against it).
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100  # targets with this id are not scored (F.cross_entropy's default)
CHUNK_BYTES = 64 * 2**20  # float32 logits per slice on a CPU (cache-friendly reuse)
ACCELERATOR_CHUNK_BYTES = 2**30  # on GPUs: few, large products keep the device busy


class _ChunkedHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        rows: int,
        softcap: float | None,
    ):
        scored = targets != IGNORE_INDEX
        count = scored.sum().clamp(min=1)
        safe_targets = targets.clamp(min=0)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for start in range(0, hidden.shape[0], rows):
            h, y = hidden[start : start + rows], safe_targets[start : start + rows]
            keep = scored[start : start + rows, None]
            logits = (h @ weight.T).float()  # (rows, V)
            if softcap is not None:  # c * tanh(z / c); its derivative is 1 - tanh(z / c)^2
                squashed = torch.tanh(logits / softcap)
                logits = softcap * squashed
            log_probs = torch.log_softmax(logits, dim=-1)
            total -= (log_probs.gather(1, y[:, None]) * keep).sum()
            # d(sum of NLL)/d(logits) = softmax - one-hot, zero on unscored rows
            grad = log_probs.exp_()
            grad.scatter_add_(1, y[:, None], -keep.to(grad.dtype))
            grad = grad.mul_(keep)
            if softcap is not None:
                grad = grad.mul_(1 - squashed.square())
            grad = grad.to(h.dtype)
            grad_hidden[start : start + rows] = grad @ weight.to(grad.dtype)
            grad_weight += grad.T @ h.to(grad.dtype)
        ctx.save_for_backward(grad_hidden / count, grad_weight.to(weight.dtype) / count)
        return total / count

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None, None


def head_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    softcap: float | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` (IGNORE_INDEX skipped),
    the logits soft-capped as ``softcap * tanh(z / softcap)`` when ``softcap`` is set.

    ``hidden``: (..., d); ``weight``: (V, d); ``targets``: (...) int64.
    """
    hidden, targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    budget = CHUNK_BYTES if hidden.device.type == "cpu" else ACCELERATOR_CHUNK_BYTES
    rows = max(1, budget // (4 * weight.shape[0]))
    return _ChunkedHeadLoss.apply(hidden, weight, targets, rows, softcap)
