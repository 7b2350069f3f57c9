"""The ``zoo`` command's own behaviour, outside any subcommand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zoo.cli import main as zoo


def test_a_reader_that_stops_early_ends_the_command_quietly() -> None:
    """`zoo recipes | head -1` must not end in a BrokenPipeError traceback: SIGPIPE's code, no stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", "recipes"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the command writes anything
    _, stderr = proc.communicate(timeout=120)
    assert stderr == ""
    assert proc.returncode == 128 + 13


@pytest.mark.parametrize("command", [["train"], ["sweep"], ["slurm", "submit"]])
def test_overrides_are_optional(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Without a recipe, only the recipe is asked for: overrides may always be left out."""
    with pytest.raises(SystemExit) as exit_:
        zoo(command)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("the following arguments are required: recipe")
