"""An exponential moving average of the weights (``trainer.ema``), kept on the device.

After every optimizer step each averaged tensor moves ``1 - decay`` of the way towards the live
one, in one fused ``torch._foreach_lerp_`` call over all of them: the same update as
``torch.optim.swa_utils.get_ema_multi_avg_fn``, without a second model object. Parameters and
floating-point buffers (batch-norm statistics) are averaged; integer buffers (batch counts) are
taken from the live model as they are.

Evaluation swaps the average into the model's own tensors and back (:meth:`WeightAverage.applied`),
so the data-parallel wrapper, a compiled model and a captured step all keep the tensors they hold.
Every process keeps its own copy: after the gradient all-reduce the live weights are the same on
all of them, so the averages are too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _averaged_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors that are averaged, by state-dict name: parameters and float buffers."""
    tensors = dict(model.named_parameters())
    tensors.update({name: buffer for name, buffer in model.named_buffers() if buffer.is_floating_point()})
    return tensors


class WeightAverage:
    """``average = decay * average + (1 - decay) * live``, for every parameter and float buffer.

    Build it from the unwrapped model after ``accelerator.prepare`` (the live tensors are held by
    reference, and loading a checkpoint later copies into them in place).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"an EMA decay is between 0 and 1, got {decay}")
        self.decay = decay
        live = _averaged_tensors(model)
        self.names = list(live)
        self._live = [tensor.detach() for tensor in live.values()]
        self._average = [tensor.detach().clone() for tensor in self._live]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the live weights; call after every optimizer step (no host sync)."""
        torch._foreach_lerp_(self._average, self._live, 1.0 - self.decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own weights again after it."""
        with torch.no_grad():
            raw = [tensor.clone() for tensor in self._live]
            torch._foreach_copy_(self._live, self._average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self._live, raw)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged tensors by the model's state-dict names (for checkpoints and model files)."""
        return dict(zip(self.names, self._average, strict=True))

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a saved average in place, bit for bit; the names must match this model's."""
        if set(state) != set(self.names):
            missing, unexpected = sorted(set(self.names) - set(state)), sorted(set(state) - set(self.names))
            raise ValueError(f"the saved EMA does not fit this model (missing {missing}, unexpected {unexpected})")
        for name, average in zip(self.names, self._average, strict=True):
            average.copy_(state[name])
