"""Recipes: override parsing, strict validation, and the one-line errors a user sees.

Unit tests call :func:`zoo.recipe.load_recipe` directly. The bad-input kinds the issue lists are
also run for real, as ``python launch/train.py ...`` and through ``accelerate launch -q``: each
must print exactly one non-empty line on stderr, starting ``error:``, exit non-zero, show no
traceback, and leave no trace on disk (validation finishes before any work starts).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zoo.errors import ZooError
from zoo.recipe import SHIPPED_RECIPES, Recipe, find_recipe, load_recipe, parse_override
from zoo.run import main

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "launch" / "train.py")
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
MLP_RECIPE = str(REPO / "recipes" / "mlp.yaml")


# -- overrides -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts", "value"),
    [
        ("trainer.lr=3e-4", ["trainer", "lr"], 3e-4),  # YAML 1.1 alone would read "3e-4" as a string
        ("trainer.lr=1.0E-3", ["trainer", "lr"], 1e-3),
        ("trainer.epochs=3", ["trainer", "epochs"], 3),
        ("model.widths=[256, 128]", ["model", "widths"], [256, 128]),
        ("tracking.tags=[a, b]", ["tracking", "tags"], ["a", "b"]),
        ("tracking.wandb=false", ["tracking", "wandb"], False),
        ("tracking.entity=null", ["tracking", "entity"], None),
        ("tracking.name=nan", ["tracking", "name"], "nan"),  # stays a word, not a float NaN
        ("model.name=bn_mlp", ["model", "name"], "bn_mlp"),
        ("output_dir=runs/a=b", ["output_dir"], "runs/a=b"),  # only the first '=' splits
        ("seed=7", ["seed"], 7),
    ],
)
def test_parse_override(text: str, parts: list[str], value: object) -> None:
    assert parse_override(text) == (parts, value)
    assert type(parse_override(text)[1]) is type(value)


@pytest.mark.parametrize("text", ["trainer.lr", "=3", "trainer..lr=3", "trainer.l r=3", "trainer.lr=[1,"])
def test_malformed_override(text: str) -> None:
    with pytest.raises(ZooError) as err:
        parse_override(text)
    assert str(err.value).startswith(f"malformed override '{text}'")


# -- loading and validation ----------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_overrides_beat_the_file_and_reach_nested_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\nmodel: {name: bn_mlp, widths: [64, 32]}\ntrainer: {epochs: 4, lr: 0.1}\n")
    recipe = load_recipe(path, ["trainer.lr=3e-4", "model.widths=[16]", "seed=5", "tracking.tags=[x]"])
    assert recipe.trainer.lr == 3e-4
    assert recipe.trainer.epochs == 4  # untouched by the overrides
    assert recipe.model.name == "bn_mlp"
    assert recipe.model.hparams == {"widths": (16,)}  # coerced to the model's declared type
    assert recipe.seed == 5
    assert recipe.tracking.tags == ["x"]


def test_defaults_fill_what_the_file_leaves_out(tmp_path: Path) -> None:
    assert load_recipe(write(tmp_path, "seed: 0\n")) == Recipe.model_validate({})


def test_recipe_bytes_that_are_not_utf8_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("seed: 0\n# caf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(ZooError) as err:
        load_recipe(path)
    assert str(err.value) == (
        f"{path}: line 2, column 6 has a byte that is not UTF-8 (0xe9); save the recipe as UTF-8 text")


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = "x-common: &common {epochs: 3, lr: 0.1}\ntrainer:\n  <<: *common\n  lr: 0.2\n"
    path = write(tmp_path, text)
    from zoo.recipe_file import read_recipe_file

    assert read_recipe_file(path)["trainer"] == {"epochs": 3, "lr": 0.2}


def test_resolved_recipe_round_trips_through_yaml(tmp_path: Path) -> None:
    recipe = load_recipe(MLP_RECIPE, ["model.fc1=512", "trainer.epochs=2"])
    again = load_recipe(write(tmp_path, recipe.to_yaml()))
    assert again == recipe
    assert yaml.safe_load(recipe.to_yaml())["model"] == {"name": "mlp", "fc1": 512, "fc2": 128, "dropout": 0.5}


def test_a_shipped_recipe_is_found_by_name_and_a_file_of_that_name_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no checkout here: the name alone finds the package's recipe
    assert find_recipe("mlp") == SHIPPED_RECIPES / "mlp.yaml"
    assert load_recipe("skip_mlp", ["trainer.epochs=1"]).model.name == "skip_mlp"
    (tmp_path / "mlp").write_text("model: {name: bn_mlp}\n")
    assert load_recipe("mlp").model.name == "bn_mlp"
    with pytest.raises(ZooError, match=r"^recipe 'mlpp' is neither a file nor a shipped recipe \(did you mean 'mlp'"):
        load_recipe("mlpp")
    # A path is never a name, but the error points at the name (README commands run outside a checkout).
    with pytest.raises(ZooError, match=r"^recipe file 'recipes/mlp.yaml' not found; the shipped recipe 'mlp' "
                       r"runs from any folder by its name: give mlp instead of recipes/mlp.yaml$"):
        load_recipe("recipes/mlp.yaml")


def test_top_level_recipes_are_links_to_the_shipped_ones() -> None:
    """One copy: the wheel ships zoo/recipes/, and recipes/ in a checkout links to the same files."""
    top = {p.name: p for p in (REPO / "recipes").glob("*.yaml")}
    assert sorted(top) == sorted(p.name for p in SHIPPED_RECIPES.glob("*.yaml")) == [
        "bn_mlp.yaml", "mlp.yaml", "skip_mlp.yaml"]
    for name, path in top.items():
        assert path.is_symlink() and path.resolve() == (SHIPPED_RECIPES / name).resolve(), f"recipes/{name}"


@pytest.mark.parametrize("name", ["mlp", "bn_mlp", "skip_mlp"])
def test_shipped_recipes_load_and_say_how_to_run_them(name: str) -> None:
    path = REPO / "recipes" / f"{name}.yaml"
    recipe = load_recipe(path)
    assert recipe.model.name == name
    header = path.read_text().splitlines()
    assert header[0].startswith("# ")  # what the recipe is for
    assert header[1].strip() == f"#   accelerate launch -m zoo.train {name}"


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("modle: {name: mlp}\n", [], "{path}: unknown key 'modle' (did you mean 'model'?)"),
        ("trainer: {epoch: 3}\n", [], "{path}: unknown key 'trainer.epoch' (did you mean 'trainer.epochs'?)"),
        ("trainer: {epochs: 3}\n", ["trainer.epoch=4"],
         "override 'trainer.epoch=4': unknown key 'trainer.epoch' (did you mean 'trainer.epochs'?)"),
        # A key without its section is pointed at the section(s) that have it.
        ("seed: 0\n", ["epochs=4"], "override 'epochs=4': unknown key 'epochs' (did you mean 'trainer.epochs'?)"),
        ("name: mine\n", [],
         "{path}: unknown key 'name' (did you mean 'model.name' or 'data.name' or 'tracking.name'?)"),
        ("trainer: {epochs: three}\n", [], "{path}: key 'trainer.epochs': input should be a valid integer"),
        ("data: {batch_size: 0}\n", [], "{path}: key 'data.batch_size': input should be greater than 0"),
        ("trainer: {optimizer: adamm}\n", [],
         "{path}: key 'trainer.optimizer': input should be 'adam', 'adamw' or 'sgd'"),
        ("trainer: {lr: 0.1}\n", ["trainer.lr.x=1"], "override 'trainer.lr.x=1': 'lr' is a value, not a section"),
        ("- mlp\n- bn_mlp\n", [], "{path}: a recipe is a mapping of sections"),
        ("model: {name: mlpp}\n", [], "{path}: unknown model 'mlpp' (did you mean 'mlp'?); run `zoo models`"),
        ("model: {name: mlp, fc3: 8}\n", [],
         "{path}: model 'mlp' has no hyperparameter 'fc3' (did you mean 'fc2'?); "
         "valid: fc1: int >= 1, fc2: int >= 1, dropout: float >= 0, < 1"),
        ("seed: 0\n", ["model.fc1=wide"], "override 'model.fc1=wide': model 'mlp' hyperparameter 'fc1' expects int"),
        # Ranges declared in the model's signature, checked before any work.
        ("seed: 0\n", ["model.fc1=0"],
         "override 'model.fc1=0': model 'mlp' hyperparameter 'fc1' expects int >= 1, got 0"),
        ("seed: 0\n", ["model.fc1=-1"], "override 'model.fc1=-1': model 'mlp' hyperparameter 'fc1' expects int >= 1"),
        ("model: {name: mlp, dropout: 2}\n", [],
         "{path}: model 'mlp' hyperparameter 'dropout' expects float >= 0, < 1, got 2"),
        ("model: {name: bn_mlp, widths: [64, 0]}\n", [],
         "{path}: model 'bn_mlp' hyperparameter 'widths' expects tuple[int >= 1, ...], got [64, 0]"),
        # A key given twice: plain YAML would keep the second silently.
        ("trainer:\n  epochs: 3\nseed: 1\ntrainer:\n  lr: 0.1\n", [],
         "{path}: key 'trainer' is given twice, on line 1 and line 4; keep one of them"),
        ("trainer: {epochs: 3, lr: 0.1, epochs: 4}\n", [], "{path}: key 'epochs' is given twice, on line 1 and line 1"),
        # An untrained model's summary would pass as a result.
        ("trainer: {epochs: 0}\n", [],
         "{path}: key 'trainer.epochs': input should be greater than or equal to 1, got 0"),
        # data.image_size: N or [H, W] of whole numbers above 0, nothing lax parsing would take or guess at.
        ("data: {image_size: 0}\n", [], "{path}: key 'data.image_size': expected N (for N x N pixels) or [H, W], "
         "whole numbers above 0 such as 32 or [32, 48], got 0"),
        ("seed: 0\n", ["data.image_size=32x32"], "override 'data.image_size=32x32': key 'data.image_size': expected N"),
        ("seed: 0\n", ["data.image_size=[32,0]"], "override 'data.image_size=[32,0]': key 'data.image_size': expected"),
        ("data: {image_size: [28, 28, 3]}\n", [], "{path}: key 'data.image_size': expected N"),
        ("data: {image_size: true}\n", [], "{path}: key 'data.image_size': expected N"),
        ("data: {image_size: 32.5}\n", [], "{path}: key 'data.image_size': expected N"),
        ("", [], "{path} is empty; a recipe needs at least one setting"),
        ("# nothing but a comment\n", [], "{path} is empty"),
        ("seed: 0\ntrainer:\n  epochs: 3\n lr: 0.1\n", [], "{path}: YAML syntax error at line 4"),
        ("seed: !!python/object/apply:os.system [echo unsafe]\n", [], "{path}: YAML syntax error at line 1"),
    ],
)
def test_bad_recipes_name_the_file_or_override_and_the_key(
    tmp_path: Path, text: str, overrides: list[str], expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ZooError) as err:
        load_recipe(path, overrides)
    message = str(err.value)
    assert message.startswith(expected.format(path=path)), message
    assert "\n" not in message


@pytest.mark.parametrize(("value", "size"), [("32", (32, 32)), ("[28, 36]", (28, 36)), ("null", None)])
def test_image_size_is_n_or_height_and_width_and_reloads(value: str, size: tuple[int, int] | None) -> None:
    recipe = load_recipe(MLP_RECIPE, [f"data.image_size={value}"])
    assert recipe.data.image_size == size
    assert Recipe.model_validate(yaml.safe_load(recipe.to_yaml())) == recipe  # recipe.yaml holds [H, W]


def test_missing_recipe_suggests_a_neighbour(tmp_path: Path) -> None:
    write(tmp_path, "seed: 0\n", "mlp.yaml")
    with pytest.raises(ZooError, match=r"recipe file '.*mlpp\.yaml' not found \(did you mean 'mlp\.yaml'\?\)"):
        load_recipe(tmp_path / "mlpp.yaml")


def test_print_recipe_in_process(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "never-made"
    assert main([MLP_RECIPE, f"output_dir={out}", "trainer.epochs=2", "--print-recipe"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["epochs"] == 2
    assert printed["output_dir"] == str(out)
    assert not out.exists()


# -- the same errors, as a user sees them ------------------------------------------------------

# (kind, recipe text or None for a missing file, overrides, fragments the one line must hold)
BAD_INPUT = [
    ("unknown-key", "seed: 0\nmodle: {name: mlp}\n", [], ["unknown key 'modle'", "(did you mean 'model'?)"]),
    ("nested-typo", "trainer: {epoch: 3}\n", [], ["unknown key 'trainer.epoch'", "(did you mean 'trainer.epochs'?)"]),
    ("wrong-type", "trainer: {epochs: three}\n", [], ["key 'trainer.epochs'", "valid integer", "'three'"]),
    ("yaml-syntax", "seed: 0\ntrainer:\n  epochs: 3\n lr: 0.1\n", [], ["YAML syntax error at line 4"]),
    ("missing-recipe", None, [], ["recipe file", "not found"]),
    ("unknown-model", "model: {name: mlpp}\n", [], ["unknown model 'mlpp'", "(did you mean 'mlp'?)", "`zoo models`"]),
    ("unknown-hparam", "model: {name: mlp, fc3: 8}\n", [],
     ["no hyperparameter 'fc3'", "valid: fc1: int >= 1, fc2: int >= 1, dropout: float >= 0, < 1"]),
    ("hparam-range", "seed: 0\n", ["model.fc1=0"], ["hyperparameter 'fc1' expects int >= 1, got 0"]),
    ("malformed-override", "seed: 0\n", ["trainer.lr"], ["malformed override 'trainer.lr'", "section.key=value"]),
    ("override-typo", "seed: 0\n", ["trainer.lrr=0.1"],
     ["override 'trainer.lrr=0.1'", "unknown key 'trainer.lrr'", "(did you mean 'trainer.lr'?)"]),
]


def bad_input_command(tmp_path: Path, text: str | None, overrides: list[str]) -> tuple[list[str], Path, Path]:
    """The recipe file (or a path with none), and where a run would write if it started."""
    recipe = tmp_path / "recipe.yaml"
    output_dir = tmp_path / "run"
    if text is not None:
        # Appended, so that line numbers in the text stay the ones a YAML error should name.
        recipe.write_text(f"{text}output_dir: {output_dir}\ntracking: {{wandb: false}}\n")
    return [TRAIN, str(recipe), *overrides], recipe, output_dir


def assert_one_line_error(proc: subprocess.CompletedProcess, fragments: list[str], where: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert where in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(("kind", "text", "overrides", "fragments"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_line_with_python(
    tmp_path: Path, kind: str, text: str | None, overrides: list[str], fragments: list[str]
) -> None:
    args, recipe, output_dir = bad_input_command(tmp_path, text, overrides)
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    # Names the override when the override is at fault, the file otherwise.
    where = f"override '{overrides[0]}'" if overrides else str(recipe)
    assert_one_line_error(proc, fragments, where)
    assert not output_dir.exists()


@pytest.mark.parametrize("kind", ["unknown-model", "malformed-override"])
def test_bad_input_is_one_line_through_accelerate_launch_quiet(tmp_path: Path, kind: str) -> None:
    """``accelerate launch -q`` passes the child's stderr through and adds nothing.

    Without ``-q`` Accelerate (single process) raises its own ``CalledProcessError`` with a
    traceback after the child's line; with ``-q`` it exits 1 quietly. Neither keeps the child's
    exit code 2.
    """
    _, text, overrides, fragments = next(case for case in BAD_INPUT if case[0] == kind)
    args, _, output_dir = bad_input_command(tmp_path, text, overrides)
    cmd = [ACCELERATE, "launch", "-q", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert_one_line_error(proc, fragments, "error: ")
    assert not output_dir.exists()


def test_two_process_bad_input_still_prints_its_one_line(tmp_path: Path) -> None:
    # torchrun stops every rank when the first one exits and adds its own failure report (not
    # ours to silence); our line must still be there, exactly once.
    cmd = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           TRAIN, "recipes/mlp.yaml", "trainer.epoch=3", f"output_dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0
    assert errors == ["error: override 'trainer.epoch=3': unknown key 'trainer.epoch' "
                      "(did you mean 'trainer.epochs'?)"], proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()


def test_print_recipe_shows_the_training_features_and_trackers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([MLP_RECIPE, "--print-recipe"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    trainer, tracking = printed["trainer"], printed["tracking"]
    assert trainer["ema"] is None and trainer["early_stopping"] is None and trainer["profile"] is None
    assert trainer["val_every_steps"] == 0
    assert tracking["backends"] == ["wandb"] and tracking["wandb"] is True and tracking["mlflow_uri"] is None

    assert main([MLP_RECIPE, "trainer.early_stopping=true", "trainer.profile.steps=3", "--print-recipe"]) == 0
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert trainer["early_stopping"] == {"metric": "val_loss", "mode": "min", "patience": 3, "min_delta": 0.0}
    assert trainer["profile"] == {"steps": 3, "wait": 5}


@pytest.mark.parametrize(
    ("overrides", "backends"),
    [
        ([], ["wandb"]),
        (["tracking.wandb=false"], []),
        (["tracking.backends=[csv, tensorboard]"], ["csv", "tensorboard"]),
        (["tracking.backends=[csv]", "tracking.wandb=true"], ["csv", "wandb"]),
        (["tracking.backends=[wandb, mlflow]", "tracking.wandb=false"], ["mlflow"]),
    ],
)
def test_the_wandb_switch_maps_onto_backends(overrides: list[str], backends: list[str]) -> None:
    tracking = load_recipe(MLP_RECIPE, overrides).tracking
    assert tracking.backends == backends and tracking.wandb == ("wandb" in backends)
    again = Recipe.model_validate(yaml.safe_load(Recipe(tracking=tracking).to_yaml()))  # recipe.yaml reloads
    assert again.tracking == tracking


def test_bad_feature_settings_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for override, key in [("trainer.ema=1.5", "trainer.ema"), ("tracking.backends=[neptune]", "tracking.backends"),
                          ("trainer.early_stopping.metric=val_f1", "trainer.early_stopping.metric"),
                          ("data.image_size=0", "data.image_size")]:
        assert main([MLP_RECIPE, override, "--print-recipe"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: override '{override}': key '{key}") and err.count("\n") == 1, err
