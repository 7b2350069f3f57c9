"""What a person watching a run sees: a tqdm bar on a terminal, plain lines in a log file.

Plain ``[zoo] step ...`` lines (Slurm logs, CI) come at most one every ``PLAIN_INTERVAL_S``
seconds, so a log file never fills with bars.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

PLAIN_INTERVAL_S = 10.0  # the least time between two plain progress lines in a non-terminal log


def _usable_terminal(stream: TextIO) -> bool:
    """A terminal a bar can be drawn on; a pseudo-terminal sized 0x0 (some CI and container
    runners) hides every tqdm bar, so it gets plain lines instead."""
    if not getattr(stream, "isatty", lambda: False)():
        return False
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return True  # a terminal whose size is unknown: tqdm falls back to a fixed width
    return size.columns > 0 and size.lines > 0


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """What a person watching the run sees: a bar on a terminal, plain lines in a log file."""

    def __init__(self, total_steps: int, epochs: int, stream: TextIO | None = None,
                 interval: float = PLAIN_INTERVAL_S) -> None:
        self.stream = stream or sys.stdout
        self.total_steps, self.epochs, self.interval = total_steps, epochs, interval
        self.tty = _usable_terminal(self.stream)
        self.bar: Any = None
        self.val_acc: float | None = None
        self._start_step, self._started = 0, time.perf_counter()
        self._last_line: float | None = None

    def begin(self, global_step: int) -> None:
        self._start_step, self._started = global_step, time.perf_counter()
        if self.tty and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total_steps, initial=global_step, file=self.stream, unit="step",
                            desc="train", dynamic_ncols=True, leave=True)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)  # tqdm itself limits how often it redraws

    def window(self, record: dict[str, Any]) -> None:
        """A step-window record: the bar's numbers, or one plain line (rate-limited)."""
        shown = {"loss": f"{record['train_loss']:.4f}", "samples/s": f"{record['samples_per_second']:,.0f}"}
        if self.val_acc is not None:
            shown["val_acc"] = f"{self.val_acc:.4f}"
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            return
        now = time.perf_counter()
        if self._last_line is not None and now - self._last_line < self.interval:
            return
        self._last_line = now
        step = record["global_step"]
        done = step - self._start_step
        eta = (now - self._started) / done * (self.total_steps - step) if done > 0 else 0.0
        acc = f" val_acc {shown['val_acc']}" if "val_acc" in shown else ""
        self._print(f"[zoo] step {step}/{self.total_steps} (epoch {record['epoch']:.2f}/{self.epochs}) "
                    f"loss {shown['loss']}{acc} lr {record['lr']:.3g} {shown['samples/s']} samples/s "
                    f"eta {_format_eta(eta)}")

    def epoch(self, record: dict[str, Any]) -> None:
        self.val_acc = record["val_acc"]
        train_loss = "-" if record["train_loss"] is None else f"{record['train_loss']:.4f}"
        self._print(f"[zoo] epoch {record['epoch']}/{self.epochs} train_loss {train_loss} "
                    f"val_loss {record['val_loss']:.4f} val_acc {record['val_acc']:.4f} "
                    f"({record['train_seconds']:.2f}s)")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _print(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)  # above the bar, which is then redrawn
        else:
            print(line, file=self.stream, flush=True)
