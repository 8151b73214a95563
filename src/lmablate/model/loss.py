"""Cross-entropy of the LM head, computed a slice of rows at a time.

With a 49,152-token vocabulary, the logits of one batch of 8 x 512 tokens are 805 MB in float32,
and the usual ``cross_entropy(hidden @ W.T, targets)`` writes them, their log-softmax and its
gradient in full: three passes over memory much larger than any cache, each a fresh allocation.
Here the forward pass walks the rows in slices of ``CHUNK_BYTES`` of logits and, for each slice,
computes the loss and at once the gradients with respect to the hidden states and the head's
weight (softmax minus one-hot, times the slice's inputs); backward only scales them. No full
logits tensor ever exists. The loss is the same mean over scored targets as ``F.cross_entropy``
with ``ignore_index`` (a test checks loss and gradients against it).

With a z-loss coefficient c > 0 (PaLM; Wortsman et al. 2023, "Small-scale proxies for
large-scale Transformer training instabilities"), the objective adds c * log(Z)^2 per scored
target, Z the softmax normalizer of its (soft-capped) logits; its gradient with respect to the
logits is 2c * log(Z) * softmax, added to the cross-entropy's in the same pass. The function
returns the objective (what backward differentiates) and, beside it, its two parts.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

IGNORE_INDEX = -100  # targets with this id are not scored (F.cross_entropy's default)
CHUNK_BYTES = 64 * 2**20  # float32 logits per slice on a CPU (cache-friendly reuse)
ACCELERATOR_CHUNK_BYTES = 2**30  # on GPUs: few, large products keep the device busy


class HeadLoss(NamedTuple):
    """The training objective and its parts: means over the scored targets."""

    objective: torch.Tensor  # cross_entropy + z_loss; the only part with a gradient
    cross_entropy: torch.Tensor
    z_loss: torch.Tensor  # c * mean of log(Z)^2; 0 when c is 0


class _ChunkedHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        rows: int,
        softcap: float | None,
        z_coefficient: float,
    ):
        scored = targets != IGNORE_INDEX
        count = scored.sum().clamp(min=1)
        safe_targets = targets.clamp(min=0)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        total_z = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for start in range(0, hidden.shape[0], rows):
            h, y = hidden[start : start + rows], safe_targets[start : start + rows]
            keep = scored[start : start + rows, None]
            logits = (h @ weight.T).float()  # (rows, V)
            if softcap is not None:  # c * tanh(z / c); its derivative is 1 - tanh(z / c)^2
                squashed = torch.tanh(logits / softcap)
                logits = softcap * squashed
            log_z = torch.logsumexp(logits, dim=-1, keepdim=True) if z_coefficient else None
            log_probs = torch.log_softmax(logits, dim=-1)
            total -= (log_probs.gather(1, y[:, None]) * keep).sum()
            # d(sum of NLL)/d(logits) = softmax - one-hot, zero on unscored rows
            grad = log_probs.exp_()
            if log_z is not None:  # d(c log(Z)^2)/d(logits) = 2c log(Z) softmax
                total_z += (log_z.square() * keep).sum()
                grad = grad.mul_(1 + 2 * z_coefficient * log_z)
                grad.scatter_add_(1, y[:, None], -keep.to(grad.dtype))
            else:
                grad.scatter_add_(1, y[:, None], -keep.to(grad.dtype))
            grad = grad.mul_(keep)
            if softcap is not None:
                grad = grad.mul_(1 - squashed.square())
            grad = grad.to(h.dtype)
            grad_hidden[start : start + rows] = grad @ weight.to(grad.dtype)
            grad_weight += grad.T @ h.to(grad.dtype)
        ctx.save_for_backward(grad_hidden / count, grad_weight.to(weight.dtype) / count)
        cross_entropy, z_term = total / count, z_coefficient * total_z / count
        objective = cross_entropy + z_term if z_coefficient else cross_entropy.clone()
        ctx.mark_non_differentiable(cross_entropy, z_term)
        return objective, cross_entropy, z_term

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_ce: torch.Tensor, _grad_z: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None, None, None


def head_losses(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    softcap: float | None = None,
    z_loss: float = 0.0,
) -> HeadLoss:
    """The objective ``cross-entropy + z_loss * mean log(Z)^2`` of ``hidden @ weight.T``
    against ``targets`` (IGNORE_INDEX skipped), with its two parts; the logits soft-capped as
    ``softcap * tanh(z / softcap)`` when ``softcap`` is set.

    ``hidden``: (..., d); ``weight``: (V, d); ``targets``: (...) int64.
    """
    hidden, targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    budget = CHUNK_BYTES if hidden.device.type == "cpu" else ACCELERATOR_CHUNK_BYTES
    rows = max(1, budget // (4 * weight.shape[0]))
    return HeadLoss(*_ChunkedHeadLoss.apply(hidden, weight, targets, rows, softcap, z_loss))


def head_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    softcap: float | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` (IGNORE_INDEX skipped),
    with gradients; ``head_losses`` without a z-loss."""
    return head_losses(hidden, weight, targets, softcap).objective
