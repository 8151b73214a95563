"""One run on several processes: torchrun's environment, the process group, and the few
collectives the training loop needs.

torchrun (``python -m torch.distributed.run``) starts one process per GPU (or per CPU slot) and
tells each who it is through ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. lmablate reads those, joins the process group (NCCL between GPUs, gloo on CPU)
and trains with DistributedDataParallel: every rank holds the whole model and takes a disjoint
slice of each global batch, and DDP averages the gradients in the backward pass, so an update
equals the single-process update on the whole batch (the config's ``batch_size`` is global).

Decisions that end the loop (a stop request, a non-finite loss) must be the same on every rank,
or the ranks that go on wait forever for the ones that stopped; they are agreed over a gloo
group on the host, so agreeing never waits for the GPU. Outside torchrun ``World`` is one
process and every method here returns its input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from lmablate.errors import ConfigError, LmablateError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass
class World:
    """This process's place among the processes that train one run together."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    _control: Any = field(default=None, repr=False)  # gloo group for host-side agreement

    @classmethod
    def from_environment(cls) -> World:
        """The world torchrun describes, or a single process when not launched by it."""
        if "WORLD_SIZE" not in os.environ:
            return cls()
        try:
            rank, size, local_rank = (int(os.environ[name]) for name in TORCHRUN_VARIABLES)
        except (KeyError, ValueError) as exc:
            found = {name: os.environ.get(name) for name in TORCHRUN_VARIABLES}
            raise LmablateError(
                f"WORLD_SIZE is set but the torchrun variables are incomplete ({found}); "
                "launch with torchrun (python -m torch.distributed.run)"
            ) from exc
        return cls(rank, size, local_rank)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run directory and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    # ------------------------------------------------------------------------------ set-up

    def join(self, device: torch.device) -> torch.device:
        """Join the process group; returns the device this rank trains on (cuda:LOCAL_RANK)."""
        if not self.distributed:
            return device
        if device.type == "mps":
            raise LmablateError(
                "training one run on several processes needs CUDA (NCCL) or the CPU (gloo); "
                "train.device is mps: run it in one process"
            )
        if device.type == "cuda":
            available = torch.cuda.device_count()
            if self.local_rank >= available:
                raise LmablateError(
                    f"process {self.rank} (local rank {self.local_rank}) has no GPU: this node "
                    f"has {available}; start at most {available} processes per node"
                )
            device = torch.device("cuda", self.local_rank)  # one GPU per process
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if dist.get_world_size() != self.size:  # what the group says wins over our reading
            raise LmablateError(
                f"WORLD_SIZE is {self.size} but the process group holds "
                f"{dist.get_world_size()} processes"
            )
        self._control = dist.new_group(backend="gloo")
        return device

    def leave(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
            self._control = None

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The model DDP-wrapped across ranks (the model itself for one process)."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    # ------------------------------------------------------------------------- batch split

    def local_batch(self, batch_size: int, grad_accum_steps: int) -> tuple[int, int]:
        """(sequences this rank takes from each global batch, its micro-batches per step).

        The global batch, and so the loss, gradient and learning-rate schedule, is the
        config's whatever the number of processes; what adjusts is gradient accumulation.
        Each rank keeps micro-batches no larger than the config's (what fits in memory): a
        batch of 8 in 4 micro-batches of 2 on one GPU is one micro-batch of 2 on each of 4.
        """
        if batch_size % self.size:
            valid = [n for n in range(1, batch_size + 1) if batch_size % n == 0]
            raise ConfigError(
                f"train.batch_size ({batch_size}) must be divisible by the number of processes "
                f"({self.size}), so that each takes an equal slice of every batch; valid "
                f"process counts: {valid}"
            )
        per_rank = batch_size // self.size
        limit = min(batch_size // grad_accum_steps, per_rank)
        micro = max(d for d in range(1, limit + 1) if per_rank % d == 0)
        return per_rank, per_rank // micro

    def my_slice(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous, disjoint rows of a global batch."""
        if not self.distributed:
            return batch
        rows = len(batch) // self.size
        return batch[self.rank * rows : (self.rank + 1) * rows]

    # -------------------------------------------------------------------------- agreement

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any (e.g. one rank received SIGTERM)."""
        if not self.distributed:
            return flag
        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self._control)
        return bool(value.item())

    def earliest(self, step: int) -> int:
        """The smallest non-negative ``step`` over ranks; -1 where every rank has -1."""
        if not self.distributed:
            return step
        never = torch.iinfo(torch.long).max
        value = torch.tensor([step if step >= 0 else never])
        dist.all_reduce(value, op=dist.ReduceOp.MIN, group=self._control)
        return -1 if value.item() == never else int(value.item())

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a tensor on this rank's device (a logged loss)."""
        if not self.distributed:
            return tensor
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total / self.size

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self._control)
