"""The registry: lookups, errors, and plugins discovered for real through ``importlib.metadata``.

The plugins are real distributions (a ``.dist-info`` folder with ``METADATA`` and
``entry_points.txt``, beside the plugin module) kept in ``tests/fixtures/plugins``. A test copies
the ones it needs into ``tmp_path`` and puts them on ``sys.path``; ``importlib.metadata`` then finds
them exactly as it finds an installed package. The registry's module state is restored after every
test, and ``reset_plugins()`` makes discovery run again on the next lookup.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import pytest
import torch
from pydantic import Field
from torch import nn

from zoo import registry
from zoo.errors import ZooError
from zoo.models.mlp import MLP

REPO = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).parent / "fixtures" / "plugins"
DATA_CONFIG = {"input_dims": (3, 8, 8), "mapping": ["a", "b", "c", "d", "e"]}
PLUGIN_MODULES = ("zoo_tinynet", "zoo_broken", "zoo_twin_a", "zoo_twin_b")


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Whatever a test registers or discovers is gone afterwards; the process's registry is untouched."""
    registry.list_models()  # the built-ins and any installed plugins, before the snapshot
    monkeypatch.setattr(registry, "_models", dict(registry._models))
    monkeypatch.setattr(registry, "_conflicts", {k: list(v) for k, v in registry._conflicts.items()})
    monkeypatch.setattr(registry, "_plugin_errors", list(registry._plugin_errors))
    monkeypatch.setattr(registry, "_plugins_discovered", registry._plugins_discovered)
    yield
    for module in PLUGIN_MODULES:
        sys.modules.pop(module, None)


@pytest.fixture
def install_plugins(
    isolated_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., list[Path]]:
    """Put fixture distributions on ``sys.path`` and make the registry discover plugins again."""

    def install(*names: str) -> list[Path]:
        folders = []
        for name in names:
            folder = shutil.copytree(PLUGINS / name, tmp_path / name)
            monkeypatch.syspath_prepend(str(folder))
            folders.append(folder)
        registry.reset_plugins()
        return folders

    return install


# -- lookups and errors --------------------------------------------------------------------------


def test_list_models_filters_with_fnmatch_and_sorts() -> None:
    assert registry.list_models("*mlp") == ["bn_mlp", "mlp", "skip_mlp"]
    assert registry.list_models("mlp") == ["mlp"]
    assert registry.list_models("nothing*") == []
    everything = registry.list_models()
    assert everything == sorted(everything)


def test_unknown_model_suggests_the_closest_name_and_the_listing_command() -> None:
    with pytest.raises(ZooError) as err:
        registry.create_model("mpl", DATA_CONFIG)
    assert str(err.value) == (
        "unknown model 'mpl' (did you mean 'mlp'?); run `zoo models` to list the available models"
    )


def test_unknown_hyperparameter_lists_the_valid_ones_with_types() -> None:
    with pytest.raises(ZooError) as err:
        registry.create_model("mlp", DATA_CONFIG, fc_1=64)
    message = str(err.value)
    assert "model 'mlp' has no hyperparameter 'fc_1'" in message
    assert "(did you mean 'fc1'?)" in message
    assert "valid: fc1: int >= 1, fc2: int >= 1, dropout: float >= 0, < 1" in message


def test_wrong_hyperparameter_type_names_the_expected_type() -> None:
    with pytest.raises(ZooError, match=r"hyperparameter 'widths' expects tuple\[int >= 1, \.\.\.\], got 'wide'"):
        registry.create_model("bn_mlp", DATA_CONFIG, widths="wide")


def test_hyperparameters_are_coerced_and_none_keeps_the_default() -> None:
    assert registry.validate_hyperparameters("bn_mlp", {"widths": [8, 4]}) == {"widths": (8, 4)}
    model = registry.create_model("mlp", DATA_CONFIG, fc1=None, fc2=7)
    assert model.fc1.out_features == 1024  # None dropped: the model's own default
    assert model.fc2.out_features == 7


def test_model_info_reads_the_typed_signature() -> None:
    info = registry.model_info("mlp")
    assert info["source"] == "built-in"
    assert info["builder"] == "zoo.models.mlp.MLP"
    assert info["hyperparameters"] == {
        "fc1": {"type": "int >= 1", "default": 1024},
        "fc2": {"type": "int >= 1", "default": 128},
        "dropout": {"type": "float >= 0, < 1", "default": 0.5},
    }
    assert info["doc"].startswith("Two hidden layers")


def test_register_model_returns_the_class_and_reads_its_signature(isolated_registry: None) -> None:
    class Tiny(nn.Module):
        """A test model."""

        def __init__(self, data_config: dict, width: int = 3, scale: float = 1.0) -> None:
            super().__init__()
            self.linear = nn.Linear(5, width)

    assert registry.register_model("tiny_for_test")(Tiny) is Tiny
    assert "tiny_for_test" in registry.list_models()
    assert registry.model_info("tiny_for_test")["hyperparameters"] == {
        "width": {"type": "int", "default": 3}, "scale": {"type": "float", "default": 1.0},
    }
    assert registry.create_model("tiny_for_test", DATA_CONFIG, width=2).linear.out_features == 2


def test_declared_ranges_are_checked_at_recipe_load(isolated_registry: None, tmp_path: Path) -> None:
    """A plugin declares its ranges in its signature and gets the same checks as the built-ins."""
    from zoo.recipe import load_recipe

    class Ranged(nn.Module):
        def __init__(self, data_config: dict, depth: Annotated[int, Field(ge=2, le=8)] = 4) -> None:
            super().__init__()
            self.linear = nn.Linear(5, depth)

    registry.register_model("ranged_for_test")(Ranged)
    assert registry.model_info("ranged_for_test")["hyperparameters"]["depth"]["type"] == "int >= 2, <= 8"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: {name: ranged_for_test, depth: 3}\n")
    assert load_recipe(recipe).model.hparams == {"depth": 3}
    with pytest.raises(ZooError) as err:
        load_recipe(recipe, ["model.depth=9"])
    assert str(err.value).startswith(
        "override 'model.depth=9': model 'ranged_for_test' hyperparameter 'depth' expects int >= 2, <= 8, got 9")


def test_register_model_rejects_a_signature_it_cannot_read(isolated_registry: None) -> None:
    def no_data_config(width: int = 3) -> nn.Module:
        return nn.Linear(1, width)

    def no_default(data_config: dict, width: int) -> nn.Module:
        return nn.Linear(1, width)

    with pytest.raises(TypeError, match="first parameter must be 'data_config'"):
        registry.register_model("bad1")(no_data_config)
    with pytest.raises(TypeError, match="hyperparameter 'width' needs a default"):
        registry.register_model("bad2")(no_default)


def test_a_second_in_process_definition_of_a_name_is_refused(isolated_registry: None) -> None:
    def other_mlp(data_config: dict) -> nn.Module:
        return nn.Linear(1, 1)

    with pytest.raises(ValueError, match=r"model 'mlp' is registered twice: by zoo\.models\.mlp\.MLP"):
        registry.register_model("mlp")(other_mlp)
    assert registry.get_entry("mlp").builder is MLP


def test_the_same_definition_run_again_replaces_itself(isolated_registry: None) -> None:
    """A re-run notebook cell or a reloaded module defines the class anew under the same name."""

    def define() -> type[nn.Module]:
        class Cell(nn.Module):
            def __init__(self, data_config: dict, width: int = 3) -> None:
                super().__init__()

        return Cell

    first, second = define(), define()
    registry.register_model("cell_for_test")(first)
    registry.register_model("cell_for_test")(second)
    assert registry.get_entry("cell_for_test").builder is second


# -- plugins through entry points ----------------------------------------------------------------


def test_plugin_is_discovered_listed_and_built(install_plugins: Callable[..., list[Path]]) -> None:
    install_plugins("tinynet")
    assert "tinynet" in registry.list_models()
    assert {"mlp", "bn_mlp", "skip_mlp"} <= set(registry.list_models())  # merged with the built-ins
    info = registry.model_info("tinynet")
    assert info["source"] == "zoo-tinynet==1.2.0"
    assert info["builder"] == "zoo_tinynet.TinyNet"
    assert info["hyperparameters"] == {"width": {"type": "int", "default": 16}}
    assert info["doc"].startswith("One hidden layer")

    model = registry.create_model("tinynet", DATA_CONFIG, width=4)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    with pytest.raises(ZooError, match=r"no hyperparameter 'widht' \(did you mean 'width'\?\); valid: width: int"):
        registry.create_model("tinynet", DATA_CONFIG, widht=4)
    assert registry.plugin_errors() == []


def test_broken_plugin_is_reported_once_and_everything_else_works(
    install_plugins: Callable[..., list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugins("broken", "tinynet")
    for _ in range(3):  # several lookups, one report
        names = registry.list_models()
        registry.plugin_errors()
    assert "brokennet" not in names
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("warning: plugin 'brokennet' from package zoo-broken==0.1.0 failed to load: ")
    assert "ImportError: zoo_broken needs the package 'not_installed_anywhere'" in warnings[0]

    [error] = registry.plugin_errors()
    assert (error.entry_point, error.package) == ("brokennet", "zoo-broken==0.1.0")
    with pytest.raises(ZooError, match=r"model 'brokennet' is unavailable: plugin 'brokennet' from package "
                                       r"zoo-broken==0\.1\.0 failed to load: ImportError"):
        registry.create_model("brokennet", DATA_CONFIG)
    for name in names:  # every other model, the good plugin included, still builds and runs
        assert registry.create_model(name, DATA_CONFIG).eval()(torch.randn(2, 3, 8, 8)).shape == (2, 5)


def test_duplicate_names_name_both_providers_and_builtins_stay(
    install_plugins: Callable[..., list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugins("twin_a", "twin_b")
    names = registry.list_models()
    # A plugin named like a built-in: reported, and the built-in is what "mlp" still builds.
    assert registry.get_entry("mlp").builder is MLP
    assert registry.model_info("mlp")["source"] == "built-in"
    assert isinstance(registry.create_model("mlp", DATA_CONFIG), MLP)
    # Two plugins with one name: neither is preferred; looking it up names both.
    assert "twin" not in names
    with pytest.raises(ZooError) as err:
        registry.create_model("twin", DATA_CONFIG)
    assert str(err.value) == (
        "model 'twin' is provided by both zoo-twin-a==1.0 and zoo-twin-b==2.0; uninstall one of them"
    )

    reports = {(e.entry_point, e.package): e.error for e in registry.plugin_errors()}
    assert set(reports) == {("mlp", "zoo-twin-a==1.0"), ("twin", "zoo-twin-b==2.0")}
    assert "provided by both built-in and zoo-twin-a==1.0" in reports["mlp", "zoo-twin-a==1.0"]
    assert "provided by both zoo-twin-a==1.0 and zoo-twin-b==2.0" in reports["twin", "zoo-twin-b==2.0"]
    stderr = capsys.readouterr().err
    assert stderr.count("warning: ") == 2  # each reported once, at discovery


def test_zoo_models_and_recipes_see_plugins_in_a_fresh_process(tmp_path: Path) -> None:
    """End to end: plugins on PYTHONPATH, a new interpreter, the `zoo` command and the launcher."""
    folders = [shutil.copytree(PLUGINS / name, tmp_path / name) for name in ("tinynet", "broken", "twin_a")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, folders))}
    code = "import sys; from zoo.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "models"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(maxsplit=2) for line in proc.stdout.splitlines() if line.strip()]
    assert ["tinynet", "zoo-tinynet==1.2.0"] in [row[:2] for row in rows]
    assert ["mlp", "built-in"] in [row[:2] for row in rows]
    # The broken plugin is listed as unavailable, never as a usable model.
    assert all("unavailable" in row[2] for row in rows if row[0] == "brokennet")
    warnings = proc.stderr.splitlines()
    assert len(warnings) == 2, proc.stderr  # the broken plugin and the duplicate "mlp", once each
    assert any("zoo-broken==0.1.0 failed to load" in line for line in warnings)

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("model: {name: tinynet, width: 8}\n")
    proc = subprocess.run([sys.executable, "launch/train.py", str(recipe), "model.width=12", "--print-recipe"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "name: tinynet\n  width: 12\n" in proc.stdout
