"""The stop flag: signals only set it, and the previous handlers come back afterwards."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from accelerate import Accelerator

from zoo.preemption import EXIT_INTERRUPTED, StopFlag

REPO = Path(__file__).resolve().parents[1]


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


def test_ctrl_c_sets_the_flag_and_a_second_one_stops_at_once(capfd: pytest.CaptureFixture[str]) -> None:
    before = signal.getsignal(signal.SIGINT)
    stop = StopFlag(Accelerator(cpu=True))
    with stop:
        os.kill(os.getpid(), signal.SIGINT)  # the first: a checkpoint at the next step boundary
        assert stop.requested and stop.agreed(global_step=1)
        assert "Ctrl-C: stopping at the next step with a checkpoint" in capfd.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second: at once
            time.sleep(5)  # never reached
    assert signal.getsignal(signal.SIGINT) is before


def test_interrupted_run_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A Ctrl-C that raises (the second one, or one before training started) ends in one line, code 130."""
    import zoo.run

    def interrupted(recipe: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo.run, "build_data", interrupted)
    code = zoo.run.main([str(REPO / "recipes" / "mlp.yaml"), f"output_dir={tmp_path / 'run'}", "tracking.wandb=false"])
    assert code == EXIT_INTERRUPTED
    err = capsys.readouterr().err.strip()
    assert err == ("error: interrupted by Ctrl-C without a new checkpoint; start the same command again to "
                   "continue from the last one")
    assert not (tmp_path / "run").exists()
