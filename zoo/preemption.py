"""Preemption: SIGUSR1, SIGTERM and Ctrl-C only set a flag; the ranks agree on it at step boundaries.

Nothing is saved inside the signal handler. The fit loop asks :meth:`StopFlag.agreed` after each
optimizer step and each epoch; when it says stop, every rank checkpoints at that same step and
the job exits with :data:`EXIT_PREEMPTED`. A second Ctrl-C ends the process at once (for someone
who will not wait for the checkpoint), with one line and :data:`EXIT_INTERRUPTED`; the run then
continues from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import TracebackType
from typing import Any, NoReturn

import torch

EXIT_PREEMPTED = 3  # documented: the job checkpointed on a signal; start it again to resume
# With several processes the flag is agreed on by an all-reduce; doing that on every step would add
# a collective to every step, so it happens every this many optimizer steps (and at epoch ends).
CHECK_EVERY = 10
SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
EXIT_INTERRUPTED = 130  # the shell's code for a process stopped by Ctrl-C
INTERRUPTED = ("interrupted by Ctrl-C without a new checkpoint; start the same command again to continue "
               "from the last one")


class Preempted(Exception):
    """Training stopped on SIGUSR1/SIGTERM after every rank checkpointed."""


class StopFlag:
    """Installs the handlers for its ``with`` block and restores the previous ones after it (not after
    :class:`Preempted`: the process is then exiting with the stop's code, see ``__exit__``)."""

    def __init__(self, accelerator: Any, check_every: int = CHECK_EVERY) -> None:
        self.accelerator, self.check_every = accelerator, check_every
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        # Set once the stop's own checkpoint is written (zoo.checkpoint_policy): a second Ctrl-C after
        # that only cuts the run's wrap-up short.
        self.checkpointed = False

    @property
    def requested(self) -> bool:
        """A signal reached this process."""
        return self._event.is_set()

    def agreed(self, global_step: int, epoch_end: bool = False) -> bool:
        """True on every rank at once when any rank got a signal (collective with several ranks)."""
        if self.accelerator.num_processes == 1:
            return self.requested
        if not epoch_end and global_step % self.check_every:
            return False
        flag = torch.tensor([1.0 if self.requested else 0.0], device=self.accelerator.device)
        return self.accelerator.reduce(flag, reduction="sum").item() > 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            if self._event.is_set():
                stop_now(self.checkpointed)
            # os.write, not print: a handler may run in the middle of another print.
            os.write(2, b"[zoo] Ctrl-C: stopping at the next step with a checkpoint; Ctrl-C again stops at once\n")
        self._event.set()

    def __enter__(self) -> StopFlag:
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None and issubclass(kind, Preempted):
            # The stop's checkpoint is written and the process is on its way out with EXIT_PREEMPTED:
            # with the old handlers back, a Ctrl-C there would raise KeyboardInterrupt and report
            # "without a new checkpoint" (130), and a SIGTERM would kill it with another code.
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def stop_now(checkpointed: bool = False) -> NoReturn:
    """The second Ctrl-C: end the process where it is, as a kill would, after one line.

    Not a KeyboardInterrupt: raised wherever the process happens to be, one can be swallowed or
    turned into another error (inside torch's checkpoint writer it becomes "unexpected pos", which
    reads like a full disk). Ending here loses nothing already written, as a kill does not: a
    checkpoint is renamed into place whole (the next start removes a half-written one), resuming
    drops a torn last line of metrics.jsonl, and the kernel releases the run folder's lock.
    ``checkpointed``: the first Ctrl-C's checkpoint is already written, so the exit is the preempted one.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # the signal may have come in the middle of a print
            stream.flush()  # what the run printed before
    if os.environ.get("RANK", "0") == "0":  # one line per job, as zoo.run prints its errors
        line = (f"[zoo] Ctrl-C again: stopping now, the checkpoint is written; exiting with code {EXIT_PREEMPTED}, "
                "start the same command again to resume" if checkpointed else f"error: {INTERRUPTED}")
        os.write(2, f"{line}\n".encode())
    os._exit(EXIT_PREEMPTED if checkpointed else EXIT_INTERRUPTED)
