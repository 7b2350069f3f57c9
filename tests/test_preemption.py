"""The stop flag: signals only set it, and the previous handlers come back afterwards."""

from __future__ import annotations

import os
import signal

import pytest
from accelerate import Accelerator

from zoo.preemption import StopFlag


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_a_signal_only_sets_the_flag_and_handlers_are_restored(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    stop = StopFlag(Accelerator(cpu=True))
    with stop:
        assert not stop.agreed(global_step=1)
        os.kill(os.getpid(), sig)  # would end the process without the handler
        assert stop.requested
        assert stop.agreed(global_step=1)
    assert signal.getsignal(sig) is before
