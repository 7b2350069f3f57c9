"""One parser for every ``zoo`` subcommand, and help that shows an example of each."""

from __future__ import annotations

import pytest

from zoo.cli import COMMANDS
from zoo.cli import main as zoo


def help_text(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        zoo([*args, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_shows_an_example_for_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    examples = help_text([], capsys).split("examples (`zoo COMMAND --help` shows more):\n")[1].splitlines()
    assert [line.split()[1] for line in examples] == list(COMMANDS)
    assert all(line.startswith("  zoo ") for line in examples)


@pytest.mark.parametrize("args", [["models"], ["recipes"], ["recipe", "new"], ["predict"], ["export"]])
def test_subcommand_help_has_examples(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(args, capsys)
    assert "example" in text and f"zoo {' '.join(args)}" in text.split("example", 1)[1]
