"""``trainer.profile``: a ``torch.profiler`` trace of a few optimizer steps, into the run folder.

The first ``wait`` steps run unprofiled (start-up: first allocations, compilation, caches), then
``warmup`` steps are profiled and thrown away (the profiler's own start-up), then ``steps`` steps
are recorded once. The profiler is idle before and after that window, so the run is otherwise
unchanged. Only the main process profiles. This module alone writes::

    <output_dir>/profile/trace.json   Chrome trace (chrome://tracing or https://ui.perfetto.dev)
    <output_dir>/profile/ops.txt      the operators that took the most time, as a table
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from torch.profiler import ProfilerActivity, profile, schedule

PROFILE_DIR = "profile"
TOP_OPS = 30  # rows of the operator table


class StepProfiler:
    """Use as a context manager around training and call :meth:`step` after every optimizer step."""

    def __init__(self, output_dir: Path, steps: int, wait: int, warmup: int = 2, cuda: bool = False) -> None:
        self.folder = Path(output_dir) / PROFILE_DIR
        self.steps, self.wait, self.warmup = steps, wait, warmup
        self.cuda = cuda
        self.written = False
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        self._profiler = profile(
            activities=activities,
            schedule=schedule(wait=wait, warmup=warmup, active=steps, repeat=1),
            on_trace_ready=self._write,
            record_shapes=True,
        )

    def _write(self, profiler: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        profiler.export_chrome_trace(str(self.folder / "trace.json"))
        sort_by = "self_cuda_time_total" if self.cuda else "self_cpu_time_total"
        table = profiler.key_averages().table(sort_by=sort_by, row_limit=TOP_OPS)
        recorded = max(0, min(self.steps, profiler.step_num - self.wait - self.warmup))
        header = (f"# torch.profiler: {recorded} optimizer step(s) after {self.wait} unprofiled and "
                  f"{self.warmup} warm-up step(s), sorted by {sort_by}\n")
        (self.folder / "ops.txt").write_text(header + table + "\n")
        self.written = True

    def __enter__(self) -> StepProfiler:
        self._profiler.__enter__()
        return self

    def step(self) -> None:
        self._profiler.step()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._profiler.__exit__(kind, error, traceback)  # a window cut short is still written
        if not self.written and kind is None:
            print(f"warning: trainer.profile wrote no trace: the run had fewer than "
                  f"{self.wait + self.warmup + 1} optimizer steps after start; lower trainer.profile.wait",
                  file=sys.stderr, flush=True)


class IdleProfiler:
    """What runs when nothing is profiled: the same calls, doing nothing."""

    def __enter__(self) -> IdleProfiler:
        return self

    def step(self) -> None:
        pass

    def __exit__(self, *exc_info: object) -> None:
        pass


def build_profiler(settings: Any, output_dir: Path, main_process: bool, cuda: bool) -> StepProfiler | IdleProfiler:
    """``trainer.profile`` (None: off) on the main process; every other process gets the idle one."""
    if settings is None or not main_process:
        return IdleProfiler()
    return StepProfiler(output_dir, settings.steps, settings.wait, cuda=cuda)
