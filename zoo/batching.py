"""The batch order of an epoch: the contract the fit loop, the data module and checkpoints share.

Batches follow one plan whatever the number of processes: the permutation depends only on the
seed and the epoch, each global batch is cut into ``grad_accum`` micro-batches, and each process
takes its own contiguous share of every micro-batch. A checkpoint therefore needs only the epoch
and the micro-step to continue with exactly the batches an uninterrupted run would have seen.
:func:`resolve_batching` sets the recipe's accumulation for the world size it runs at.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from zoo.errors import ZooError
from zoo.recipe import Recipe


@dataclass(frozen=True)
class BatchPlan:
    """The order of batches in an epoch, the same whatever the number of processes.

    A global batch of ``batch_size`` examples is cut into ``grad_accum`` micro-batches; each
    process takes its contiguous share of every micro-batch. A "step" here is a micro-batch.
    """

    num_examples: int
    batch_size: int
    seed: int
    shuffle: bool
    grad_accum: int = 1

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_examples)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_examples, generator=generator)

    @property
    def global_batches(self) -> int:
        return -(-self.num_examples // self.batch_size)

    @property
    def micro_steps(self) -> int:
        return self.global_batches * self.grad_accum

    def micro_batch_bounds(self, step: int) -> tuple[int, int]:
        """The [start, end) range of one micro-batch within the epoch's order."""
        batch, micro = divmod(step, self.grad_accum)
        start = batch * self.batch_size
        size = min(self.batch_size, self.num_examples - start)
        cuts = [start + (size * i) // self.grad_accum for i in range(self.grad_accum + 1)]
        return cuts[micro], cuts[micro + 1]

    def global_batch_size(self, step: int) -> int:
        batch = step // self.grad_accum
        return min(self.batch_size, self.num_examples - batch * self.batch_size)

    def rank_indices(
        self, epoch: int, rank: int, world_size: int, start_step: int = 0, device: torch.device | None = None
    ) -> Iterator[torch.Tensor]:
        order = self.order(epoch) if device is None else self.order(epoch).to(device)
        for step in range(start_step, self.micro_steps):
            start, end = self.micro_batch_bounds(step)
            size = end - start
            lo, hi = start + (size * rank) // world_size, start + (size * (rank + 1)) // world_size
            yield order[lo:hi]


def check_batch(recipe: Recipe, world_size: int, grad_accum: int) -> None:
    """Refuse, in one line, a global batch too small to give every process each micro-batch a share."""
    if recipe.data.batch_size < world_size * grad_accum:
        raise ZooError(
            f"data.batch_size={recipe.data.batch_size} is the global batch and cannot be split into "
            f"{world_size} processes x {grad_accum} micro-batches; raise data.batch_size"
        )


def resolve_batching(recipe: Recipe, world_size: int) -> Recipe:
    """Derive gradient accumulation from the world size when a per-device cap is set."""
    trainer = recipe.trainer
    accum = trainer.grad_accum
    if trainer.max_device_batch is not None:
        accum = max(accum, math.ceil(recipe.data.batch_size / (world_size * trainer.max_device_batch)))
    check_batch(recipe, world_size, accum)
    return recipe.model_copy(update={"trainer": trainer.model_copy(update={"grad_accum": accum})})
