"""The training step, and the low-overhead versions of it that ``trainer.compile`` selects.

* ``none``: the plain eager step.
* ``torch``: ``torch.compile(mode="reduce-overhead")`` on the model (CUDA graphs under the hood).
* ``graph``: the whole step (forward, backward, optimizer) captured once as one CUDA graph and
  replayed for every full-size batch, so a step costs one launch instead of hundreds. This is
  what makes small models fast on a big GPU, where Python and kernel launches dominate.

Both need a CUDA device. On anything else the switch falls back to the plain step and says so in
one line; results do not depend on the switch beyond float tolerance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def compile_fallback_reason(mode: str, device: torch.device, world_size: int, resident: bool,
                            grad_accum: int, mixed_precision: str, grad_clip: float | None,
                            schedule: str = "none") -> str | None:
    """Why ``trainer.compile=mode`` cannot be used here, or None when it can."""
    if mode == "none":
        return None
    if device.type != "cuda":
        return f"trainer.compile={mode} needs a CUDA device; running the plain step on {device.type}"
    if mode == "graph":
        blockers = {
            "several processes": world_size > 1,
            "streamed batches": not resident,
            "gradient accumulation": grad_accum > 1,
            "mixed precision": mixed_precision != "no",
            "gradient clipping": grad_clip is not None,
            "an LR schedule": schedule != "none",  # the captured step holds the LR as a constant
        }
        found = [name for name, present in blockers.items() if present]
        if found:
            return (f"trainer.compile=graph captures single-process fp32 steps only (here: {', '.join(found)}); "
                    "running the plain step (trainer.compile=torch works with all of these)")
    return None


class CapturedStep:
    """Forward, backward and optimizer step of one batch size, captured as one CUDA graph.

    Build it before training starts. Capturing needs a few warm-up steps on a side stream; the
    model's and optimizer's state are restored afterwards, so capturing never changes results.
    The optimizer must be built with ``capturable=True`` (Adam/AdamW) so its step lives on the GPU.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, example: torch.Tensor,
                 labels: torch.Tensor, scale: float, warmup: int = 3) -> None:
        self.model, self.optimizer, self.batch_size = model, optimizer, len(labels)
        self.static_images, self.static_labels = example.clone(), labels.clone()
        saved_model = {k: v.clone() for k, v in model.state_dict().items()}
        params = [p for group in optimizer.param_groups for p in group["params"]]
        saved_optim = {p: {k: v.clone() for k, v in optimizer.state[p].items() if torch.is_tensor(v)}
                       for p in params if p in optimizer.state}
        rng = torch.cuda.get_rng_state()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                optimizer.zero_grad(set_to_none=True)
                self._step(scale)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.static_loss = self._step(scale)
        # Warm-up and capture ran real steps: put everything back as it was, in place, because
        # the graph reads and writes these very tensors (load_state_dict would replace them).
        model.load_state_dict(saved_model)
        for p in params:
            for key, value in optimizer.state[p].items():
                if torch.is_tensor(value):
                    value.copy_(saved_optim[p][key]) if p in saved_optim else value.zero_()
        torch.cuda.set_rng_state(rng)

    def _step(self, scale: float) -> torch.Tensor:
        loss = F.cross_entropy(self.model(self.static_images), self.static_labels)
        (loss * scale).backward()
        self.optimizer.step()
        return loss.detach()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Run one captured step on this batch; returns the batch's mean loss (no host sync)."""
        self.static_images.copy_(images)
        self.static_labels.copy_(labels)
        self.graph.replay()
        return self.static_loss
