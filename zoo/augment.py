"""``data.augment``: random crops and flips of whole batches, on the device, reproducible anywhere.

The random choices for a micro-batch are drawn for the whole *global* micro-batch from a generator
seeded by (seed, epoch, micro-step) alone, and each process applies the slice that matches its
share of the examples. So an example gets the same crop and flip whether one process or eight
train, and a resumed run draws exactly what the uninterrupted one did: no random state has to be
checkpointed. The choices are a few integers per example, drawn on the CPU; the pixels never leave
the device.

* ``crop_padding: p``: pad each side by ``p`` pixels (with zeros, which is the channel mean of
  normalized images) and cut the original size back out at a random offset: a random shift of up
  to ``p`` pixels in each direction.
* ``flip: true``: mirror half of the images left to right (not for digits or text).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# Mixes (seed, epoch, step) into one generator seed; primes keep neighbouring values apart.
_EPOCH_STRIDE = 1_000_003
_SEED_STRIDE = 998_244_353


def draw(seed: int, epoch: int, step: int, size: int, crop_padding: int, flip: bool) -> torch.Tensor:
    """The choices for one global micro-batch of ``size`` examples: int64 (size, 3) of (dy, dx, flip)."""
    generator = torch.Generator().manual_seed((seed * _SEED_STRIDE + epoch * _EPOCH_STRIDE + step) % (2**63))
    shifts = torch.randint(0, 2 * crop_padding + 1, (size, 2), generator=generator)
    flips = torch.randint(0, 2, (size, 1), generator=generator) if flip else torch.zeros(size, 1, dtype=torch.int64)
    return torch.cat([shifts, flips], dim=1)


def apply(images: torch.Tensor, choices: torch.Tensor, crop_padding: int) -> torch.Tensor:
    """Crop and flip a batch (N, C, H, W) on its device by ``choices`` (N, 3) from :func:`draw`."""
    choices = choices.to(images.device)
    n, _, height, width = images.shape
    if crop_padding:
        padded = F.pad(images, (crop_padding,) * 4)
        rows = torch.arange(height, device=images.device) + choices[:, :1]  # (N, H): the padded rows kept
        cols = torch.arange(width, device=images.device) + choices[:, 1:2]  # (N, W)
        batch = torch.arange(n, device=images.device)[:, None, None]
        # Advanced indexing puts the indexed dimensions first: (N, H, W, C), then back to (N, C, H, W).
        images = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    mirrored = choices[:, 2].bool().view(n, 1, 1, 1)
    return torch.where(mirrored, images.flip(3), images).contiguous()


def augment_micro_batch(
    images: torch.Tensor, plan: Any, seed: int, epoch: int, step: int, rank: int, world_size: int,
    crop_padding: int, flip: bool,
) -> torch.Tensor:
    """This process's share of micro-batch ``step`` of ``plan`` (a :class:`zoo.data.BatchPlan`),
    cut as the plan cuts it: each rank a contiguous slice of the global micro-batch."""
    start, end = plan.micro_batch_bounds(step)
    size = end - start
    return augment_share(images, seed, epoch, step, (size * rank) // world_size, size, crop_padding, flip)


def augment_share(
    images: torch.Tensor, seed: int, epoch: int, step: int, offset: int, global_size: int,
    crop_padding: int, flip: bool,
) -> torch.Tensor:
    """This process's share of micro-batch ``step``: examples ``offset`` to ``offset + len(images)``
    of the ``global_size`` the global micro-batch holds."""
    choices = draw(seed, epoch, step, global_size, crop_padding, flip)
    return apply(images, choices[offset : offset + len(images)], crop_padding)
