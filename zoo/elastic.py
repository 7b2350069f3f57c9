"""Randomness that does not depend on the number of processes, so a run can resume on another one.

Batches are global and gradients exact for any world size; what stays per process is the random
stream dropout draws from. Here every ``nn.Dropout`` of the model is replaced by
:class:`GlobalBatchDropout`, which draws the mask of the *whole* micro-batch from a generator
seeded by (seed, epoch, micro-step, call) and keeps only this process's rows. An example therefore
gets the same mask whether it is trained on 1, 2 or 4 processes, and a run checkpointed with N
processes continues the same trajectory with M.

The price: each process draws the mask of the global micro-batch, not just its share (for one
process that is all of it, and the draw is cheaper than ``nn.Dropout``'s on a CPU: see
:class:`GlobalBatchDropout`). It is not used in a step captured as a CUDA graph (a generator
cannot be re-seeded inside a replay); such a run keeps per-process streams and says so when it
resumes on another size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads consecutive keys over the seed space
_MASK = (1 << 63) - 1


@dataclass
class Position:
    """Where the next forward is in the run: which micro-batch, and this process's rows of it."""

    epoch: int = 0
    step: int = 0  # micro-batch within the epoch
    rows: int = 0  # examples in the whole micro-batch, over all processes
    first_row: int = 0  # this process's first row within it
    calls: int = 0  # dropout calls so far in this forward


class DropoutStreams:
    """The shared position that every :class:`GlobalBatchDropout` of one model reads."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.position = Position()

    def at(self, epoch: int, step: int, rows: int, first_row: int) -> None:
        """Set before each training forward (the fit loop does)."""
        self.position = Position(epoch, step, rows, first_row)

    def generator(self, device: torch.device) -> torch.Generator:
        p = self.position
        key = self.seed
        for part in (p.epoch, p.step, p.calls):
            key = ((key ^ part) * _MIX + part + 1) & _MASK
        p.calls += 1
        return torch.Generator(device=device).manual_seed(key)


class GlobalBatchDropout(nn.Dropout):
    """``nn.Dropout`` whose mask for an example depends on its place in the global batch only."""

    def __init__(self, p: float, streams: DropoutStreams) -> None:
        super().__init__(p)
        self.streams = streams

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        position = self.streams.position
        if not self.training or self.p == 0 or position.rows < len(x):
            # Evaluation, no dropout, or a forward outside the fit loop (no position set).
            return super().forward(x)
        generator = self.streams.generator(x.device)
        # Uniform draws compared with p, not bernoulli_: on a CPU torch's bernoulli_ draws one
        # element at a time, and this whole layer (forward and backward) cost about half as much as
        # nn.Dropout's for a 128 x 1024 activation (measured, one thread). P(keep) = 1 - p exactly
        # up to float32's 2**-24 steps.
        draws = torch.rand((position.rows, *x.shape[1:]), device=x.device, dtype=torch.float32,
                           generator=generator)
        scale = 1 / (1 - self.p) if self.p < 1 else 0.0
        keep = draws.narrow(0, position.first_row, len(x)).ge_(self.p).mul_(scale)  # 0 or 1/(1-p)
        return x * keep.to(x.dtype)


def use_global_batch_dropout(model: nn.Module, seed: int) -> DropoutStreams | None:
    """Replace every plain ``nn.Dropout`` in ``model`` (in place); None when it has none.

    Other random layers (Dropout2d, functional dropout in ``forward``) are left as they are; a run
    with them still resumes on another size, on per-process streams.
    """
    streams = DropoutStreams(seed)
    found = False
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, GlobalBatchDropout(child.p, streams))
                found = True
    return streams if found else None


def streams_of(model: nn.Module) -> DropoutStreams | None:
    """The streams a model's dropout layers read, if :func:`use_global_batch_dropout` set them up."""
    for module in model.modules():
        if isinstance(module, GlobalBatchDropout):
            return module.streams
    return None


def world_size_dependent_layers(model: nn.Module) -> list[str]:
    """The layers whose training result depends on the number of processes (empty: none).

    Dropout left on per-process streams, and BatchNorm, whose statistics cover each process's
    share of the batch, not the global batch.
    """
    random_kinds = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
    found = []
    for name, module in model.named_modules():
        per_process_dropout = (isinstance(module, random_kinds) and not isinstance(module, GlobalBatchDropout)
                               and module.p > 0)
        if per_process_dropout or isinstance(module, nn.modules.batchnorm._BatchNorm):
            found.append(f"{name} ({type(module).__name__})")
    return found


def elastic_dropout(model: nn.Module, seed: int, captured: bool) -> list[str]:
    """Make ``model``'s dropout independent of the world size where it can be; returns the layers
    that still depend on it. A step ``captured`` as a CUDA graph cannot re-seed a generator on every
    replay, so it keeps per-process streams."""
    if not captured:
        use_global_batch_dropout(model, seed)
    return world_size_dependent_layers(model)
