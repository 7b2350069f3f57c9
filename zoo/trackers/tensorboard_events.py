"""The ``tensorboard`` tracking backend: event files under ``<output_dir>/tensorboard/``.

Written with ``torch.utils.tensorboard.SummaryWriter``; read with ``tensorboard --logdir
<output_dir>/tensorboard`` or TensorBoard's ``EventAccumulator``. Metrics are scalars against the
optimizer step; the recipe is a text entry ``config`` (YAML), the summary a text entry ``summary``
(JSON) plus a ``summary/<name>`` scalar for every number in it. A resumed job writes a new event
file that tells readers to drop what the killed attempt wrote after the checkpoint (purge_step).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from zoo.trackers.values import numbers

FOLDER = "tensorboard"


class TensorBoardBackend:
    name = "tensorboard"
    run_id = None

    def __init__(self, output_dir: Path, config: dict[str, Any], resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(log_dir=str(Path(output_dir) / FOLDER), purge_step=purge)
        self.step = resume_step or 0
        # Four leading spaces make the YAML a code block in TensorBoard's Markdown view.
        text = "".join(f"    {line}\n" for line in yaml.safe_dump(config, sort_keys=False).splitlines())
        self.writer.add_text("config", text, global_step=self.step)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        self.step = step
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)

    def log_summary(self, summary: dict[str, Any]) -> None:
        for key, value in numbers(summary).items():
            self.writer.add_scalar(f"summary/{key}", value, global_step=self.step)
        self.writer.add_text("summary", "    " + json.dumps(summary, default=str), global_step=self.step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
