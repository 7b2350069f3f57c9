"""``zoo plot -o FILE``: a plot zoo drew is redrawn in place; anyone else's file is never overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.test_plot import make_run
from zoo.cli import main as zoo
from zoo.plot import CURVES_FILE, is_zoo_plot, write_run_curves


@pytest.fixture
def runs(tmp_path: Path) -> list[str]:
    make_run(tmp_path / "a", epochs=2, seed=1, name="first")
    make_run(tmp_path / "b", epochs=2, seed=2, name="second")
    return [str(tmp_path / "a"), str(tmp_path / "b")]


@pytest.mark.parametrize("suffix", ["png", "pdf", "svgz", "eps"])  # svgz: the SVG writer, gzipped
def test_a_plot_zoo_drew_is_redrawn(suffix: str, runs: list[str], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / f"compare.{suffix}"
    assert zoo(["plot", runs[0], "-o", str(output)]) == 0
    first = output.read_bytes()
    assert is_zoo_plot(output)
    assert zoo(["plot", *runs, "-o", str(output)]) == 0  # the same command, one run more: a refreshed plot
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {output} (first, second)"
    assert output.read_bytes() != first and is_zoo_plot(output)


def test_a_runs_own_curves_are_a_plot_zoo_drew(runs: list[str]) -> None:
    assert is_zoo_plot(write_run_curves(runs[0])) and Path(runs[0], CURVES_FILE).is_file()
    assert zoo(["plot", *runs, "-o", str(Path(runs[0], CURVES_FILE))]) == 0


@pytest.mark.parametrize("name", ["curves.png", "figure.pdf", "photo.jpg", "folder.png"])
def test_someone_elses_file_is_never_overwritten(name: str, runs: list[str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    output = mine / name
    if name == "folder.png":
        output.mkdir()
    elif name.endswith(".pdf"):
        output.write_bytes(b"%PDF-1.4 my paper, Creator (Matplotlib)\n")
    else:  # an image another program made
        Image.new("RGB", (8, 8), "red").save(output)
    before = output.read_bytes() if output.is_file() else None
    monkeypatch.chdir(mine)  # curves.png: the default output, in the working directory
    argv = ["plot", *runs] + ([] if name == "curves.png" else ["-o", str(output)])
    assert zoo(argv) == 2
    shown = "curves.png" if name == "curves.png" else str(output)
    assert capsys.readouterr() == ("", f"error: '{shown}' already exists and is not a plot zoo drew, so it is "
                                       "never overwritten; pass another -o PATH or delete it\n")
    assert (output.read_bytes() if output.is_file() else None) == before and len(list(mine.iterdir())) == 1
