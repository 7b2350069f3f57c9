"""``zoo recipes`` and ``zoo recipe new``."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.cli import main as zoo
from zoo.recipe import load_recipe
from zoo.registry import get_entry, list_models


def test_recipes_lists_shipped_recipes_with_model_and_purpose(capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo(["recipes"]) == 0
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in capsys.readouterr().out.splitlines()}
    assert rows["mlp"] == ["mlp", "A two-layer MLP on MNIST: fc1, fc2, ReLU and dropout."]  # shipped: run by name
    assert rows["examples/zoo-cnn/recipes/cnn.yaml"][0] == "cnn"
    assert all(list_models(model) == [model] for model, _ in rows.values())  # provider models (timm/...) too


@pytest.mark.parametrize("model", list_models())
def test_new_recipe_has_every_hyperparameter_at_its_default_and_loads(
    model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert zoo(["recipe", "new", "starter", "--model", model]) == 0
    path = tmp_path / "recipes" / "starter.yaml"
    assert capsys.readouterr().out == (
        "wrote recipes/starter.yaml; run it with: accelerate launch -m zoo.train recipes/starter.yaml\n"
    )
    text = path.read_text()
    assert text.splitlines()[1] == "#   accelerate launch -m zoo.train recipes/starter.yaml"
    recipe = load_recipe(path, [])
    assert recipe.model.name == model
    assert recipe.output_dir == "runs/starter"
    defaults = {h.name: h.default for h in get_entry(model).hyperparameters.values()}
    assert recipe.model.hparams == defaults  # every one, coerced back to its type (tuples stay tuples)


def test_new_recipe_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "mine.yaml"
    target.write_text("# mine\n")
    assert zoo(["recipe", "new", "mine", "--model", "mlp", "-o", str(target)]) == 2
    assert capsys.readouterr().err == (
        f"error: '{target}' already exists and is never overwritten; pick another name or -o PATH\n"
    )
    assert target.read_text() == "# mine\n"

    assert zoo(["recipe", "new", "other", "--model", "mpl", "-o", str(tmp_path / "other.yaml")]) == 2
    assert "unknown model 'mpl' (did you mean 'mlp'?)" in capsys.readouterr().err
    assert not (tmp_path / "other.yaml").exists()
    assert zoo(["recipe", "new", "../escape", "--model", "mlp"]) == 2
    assert "must be letters, digits" in capsys.readouterr().err
