"""``zoo models``: the table, ``show`` and ``check`` (with plugins that break)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from zoo.cli import main as zoo
from zoo.docstrings import split_docstring
from zoo.model_check import MNIST_CONFIG
from zoo.registry import create_model, list_models, validate_hyperparameters

PLUGINS = REPO / "tests" / "fixtures" / "plugins"


def table(text: str) -> dict[str, list[str]]:
    """Rows of a `zoo models` table by name; columns split on runs of two or more spaces."""
    import re

    rows = [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.strip()]
    assert rows[0] == ["NAME", "SOURCE", "PARAMS (MNIST)", "DESCRIPTION"]
    return {row[0]: row[1:] for row in rows[1:]}


def test_table_lists_every_model_with_source_parameters_and_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo(["models"]) == 0
    rows = table(capsys.readouterr().out)
    assert set(list_models()) <= set(rows)
    for name in list_models():
        _source, params, description = rows[name]
        expected = sum(p.numel() for p in create_model(name, MNIST_CONFIG).parameters())
        assert params == f"{expected:,}"
        assert description
    assert rows["mlp"][0] == "built-in"
    assert rows["mlp"][1] == "936,330"  # 784*1024+1024 + 1024*128+128 + 128*10+10, by hand

    assert zoo(["models", "*mlp"]) == 0
    assert set(table(capsys.readouterr().out)) == {"mlp", "bn_mlp", "skip_mlp"}
    assert zoo(["models", "list", "skip*"]) == 0
    assert set(table(capsys.readouterr().out)) == {"skip_mlp"}


def test_show_gives_types_defaults_help_docstring_and_a_working_snippet(capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo(["models", "show", "bn_mlp"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bn_mlp  (built-in; zoo.models.bn_mlp.BatchNormMLP)")
    assert "A deep nn.Sequential of Linear -> BatchNorm1d -> ReLU -> Dropout blocks." in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  widths") or
            line.startswith("  dropout")}
    assert "tuple[int >= 1, ...]" in rows["widths"] and "(512, 256, 128)" in rows["widths"]
    assert rows["widths"].rstrip().endswith("width of each hidden block; its length is the depth.")
    assert "float" in rows["dropout"] and "0.2" in rows["dropout"]
    assert "dropout probability after each block." in rows["dropout"]
    assert "shipped recipes using it: bn_mlp" in out

    snippet = out.split("recipe snippet (every hyperparameter at its default):\n")[1].split("\n\n")[0]
    model = yaml.safe_load(snippet)["model"]
    assert model.pop("name") == "bn_mlp"
    assert validate_hyperparameters("bn_mlp", model) == {"widths": (512, 256, 128), "dropout": 0.2}


def test_show_and_check_are_actions_and_mistakes_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo(["models", "show", "mlpp"]) == 2
    assert capsys.readouterr().err == (
        "error: unknown model 'mlpp' (did you mean 'mlp'?); run `zoo models` to list the available models\n"
    )
    assert zoo(["models", "show"]) == 2
    assert "takes one model name" in capsys.readouterr().err
    assert zoo(["models", "nothing-like-this*"]) == 2
    assert capsys.readouterr().err == (
        "error: no model matches 'nothing-like-this*'; run `zoo models` to list them all\n"
    )
    assert zoo(["models", "a", "b"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_split_docstring_reads_google_style_args() -> None:
    doc = ("Summary.\n\nMore text.\n\nArgs:\n    width: the width,\n        continued here.\n"
           "    depth (int): how deep.\n\nReturns:\n    x")
    description, helps = split_docstring(doc)
    assert helps == {"width": "the width, continued here.", "depth": "how deep."}
    assert description == "Summary.\n\nMore text.\n\nReturns:\n    x"


def test_check_passes_the_zoo(capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo(["models", "check", "*mlp"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[:2] for line in lines[:-1]) == [["PASS", n] for n in ("bn_mlp", "mlp", "skip_mlp")]
    assert lines[-1] == "3 passed, 0 failed"


def _dist(root: Path, dist: str, version: str, module: str, entry_points: dict[str, str], code: str) -> Path:
    """A minimal installed distribution (dist-info + module) on a folder that goes on PYTHONPATH."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[zoo.models]\n{lines}")
    (root / f"{module}.py").write_text(code)
    return root


HARD_CODED = '''
import torch
from torch import nn


class Fixed(nn.Module):
    """Hard-codes MNIST's 784 inputs: fine on MNIST, wrong for anything else."""

    def __init__(self, data_config: dict, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))

    def forward(self, x):
        return self.net(x)


class Frozen(nn.Module):
    """Has a layer that forward never uses, so it never gets a gradient."""

    def __init__(self, data_config: dict) -> None:
        super().__init__()
        self.used = nn.Linear(1, len(data_config["mapping"]))
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        return self.used(x.flatten(1).mean(1, keepdim=True))
'''


def test_check_fails_broken_plugins_naming_the_package(tmp_path: Path) -> None:
    """What a plugin author's CI runs: one line per model, exit 1 when any fails."""
    folders = [
        shutil.copytree(PLUGINS / "broken", tmp_path / "broken"),
        shutil.copytree(PLUGINS / "tinynet", tmp_path / "tinynet"),
        _dist(tmp_path / "bad", "zoo-bad", "0.3", "zoo_bad", {"fixed": "zoo_bad:Fixed", "frozen": "zoo_bad:Frozen"},
              HARD_CODED),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, folders))}
    code = "import sys; from zoo.cli import main; sys.exit(main(sys.argv[1:]))"
    # Every installed model is built, timm's representatives included: generous for a busy machine.
    proc = subprocess.run([sys.executable, "-c", code, "models", "check"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = {line.split()[1]: line for line in proc.stdout.splitlines()[:-1]}
    assert lines["brokennet"].startswith("FAIL  brokennet")
    assert "zoo-broken==0.1.0: failed to load: ImportError: zoo_broken needs" in lines["brokennet"]
    assert lines["fixed"].startswith("FAIL  fixed")
    assert "zoo-bad==0.3: input 3x32x32:" in lines["fixed"]  # MNIST passes; the colour shape catches it
    assert "no gradient for unused.weight, unused.bias" in lines["frozen"]
    for name in ("tinynet", "mlp", "bn_mlp", "skip_mlp"):
        assert lines[name].startswith(f"PASS  {name}"), lines[name]
    failures = sum(line.startswith("FAIL") for line in lines.values())
    assert proc.stdout.splitlines()[-1] == f"{len(lines) - failures} passed, {failures} failed"
    assert failures == 3

