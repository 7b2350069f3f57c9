"""zoo.sweep.spec: grid and search specs parse, and bad ones fail in one line before anything starts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from zoo import cli
from zoo.errors import ZooError
from zoo.sweep.spec import build_spec, grid_points, parse_search, point_overrides, write_spec

REPO = Path(__file__).resolve().parents[2]
RECIPE = str(REPO / "recipes" / "mlp.yaml")


def test_grid_points_multiply_in_order(tmp_path: Path) -> None:
    spec, _ = build_spec(RECIPE, [f"output_dir={tmp_path}", "trainer.epochs=1"],
                         grid=["model.fc1=32,64", "trainer.lr=1e-3,3e-4"])
    assert spec.engine == "grid" and spec.folder == tmp_path and spec.overrides == ["trainer.epochs=1"]
    assert grid_points(spec.axes) == [["model.fc1=32", "trainer.lr=1e-3"], ["model.fc1=32", "trainer.lr=3e-4"],
                                      ["model.fc1=64", "trainer.lr=1e-3"], ["model.fc1=64", "trainer.lr=3e-4"]]
    # Each point trains into its own folder inside the sweep's, in the sweep's W&B group.
    assert point_overrides(spec, ["model.fc1=32"], tmp_path / "p") == [
        "trainer.epochs=1", "model.fc1=32", f"output_dir={tmp_path / 'p'}", f"tracking.group={tmp_path.name}"]


def test_search_space_ranges_log_and_choices() -> None:
    lr, dropout, fc1, fc2 = parse_search(["trainer.lr=log:1e-4..1e-2", "model.dropout=0.0..0.5",
                                          "model.fc1=32..128", "model.fc2=64,128"])
    assert (lr.low, lr.high, lr.log, lr.integer) == (1e-4, 1e-2, True, False)
    assert (dropout.low, dropout.high, dropout.log) == (0.0, 0.5, False)
    assert fc1.integer and (fc1.low, fc1.high) == (32, 128)
    assert not fc2.is_range and fc2.values == ("64", "128")


@pytest.mark.parametrize(("options", "message"), [
    (["--sweep", "trainer.lrr=1e-3,1e-4"], "--sweep trainer.lrr=1e-3: unknown key 'trainer.lrr' (did you mean"),
    (["--sweep", "model.fc1=32,,64"], "has an empty value"),
    (["--sweep", "model.fc1="], "--sweep 'model.fc1=' gives model.fc1 no value; write model.fc1=v1,v2,..."),
    (["--search", "trainer.lr= "], "--search 'trainer.lr= ' gives trainer.lr no value; write trainer.lr=low..high"),
    (["--sweep", "model.fc1"], "malformed --sweep 'model.fc1': write section.key=..."),
    (["--sweep", "model.fc1=32,abc"], "--sweep model.fc1=abc: model 'mlp' hyperparameter 'fc1' expects int"),
    (["--search", "trainer.lr=1e-2..1e-4"], "low end 0.01 is not below its high end 0.0001"),
    (["--search", "trainer.lr=log:0..1"], "a log range needs a low end above 0"),
    (["--search", "model.dropoutt=0.0..0.5"], "model 'mlp' has no hyperparameter 'dropoutt' (did you mean 'dropout'?)"),
    (["--search", "trainer.lr=1e-4..1e-2", "--metric", "val_f1"], "--metric 'val_f1' is not something a run records"),
    (["--sweep", "model.fc1=32", "--search", "trainer.lr=1e-4..1e-2"], "not both"),
    (["--sweep", "model.fc1=32,64", "--prune"], "--prune needs an Optuna search"),
    (["--sweep", "model.fc1=32,64", "--storage", "sqlite:///x.db"], "a grid (--sweep) has none"),
    (["--search", "trainer.lr=1e-4..1e-2", "--trials", "0"], "--trials must be at least 1"),
    (["--sweep", "model.fc1=32", "--parallel", "0"], "--parallel must be at least 1"),
    ([], "nothing to sweep"),
])
def test_bad_spec_is_one_line_and_writes_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                 options: list[str], message: str) -> None:
    code = cli.main(["sweep", RECIPE, f"output_dir={tmp_path / 'sweep'}", *options])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "sweep").exists()


def test_a_folder_holding_another_sweep_is_refused(tmp_path: Path) -> None:
    first, _ = build_spec(RECIPE, [f"output_dir={tmp_path}"], grid=["model.fc1=32,64"])
    write_spec(first)
    again, _ = build_spec(RECIPE, [f"output_dir={tmp_path}"], grid=["model.fc1=32,64"])
    write_spec(again)  # the same sweep: fine
    with pytest.raises(ZooError, match="already holds a different sweep"):
        build_spec(RECIPE, [f"output_dir={tmp_path}"], grid=["model.fc1=32,48"])
    other, _ = build_spec(RECIPE, [f"output_dir={tmp_path / 'elsewhere'}"], grid=["model.fc1=32,48"])
    with pytest.raises(ZooError, match="already holds a different sweep"):
        write_spec(replace(other, sweep_dir=str(tmp_path)))
    assert json.loads((tmp_path / "sweep.json").read_text())["axes"][0]["values"] == ["32", "64"]


def test_a_dry_run_of_a_different_sweep_is_refused_as_its_submit_would_be(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = build_spec(RECIPE, [f"output_dir={tmp_path}"], grid=["model.fc1=32,64"])
    write_spec(first)
    code = cli.main(["slurm", "submit", RECIPE, f"output_dir={tmp_path}", "--sweep", "model.fc1=32,48", "--dry-run"])
    assert code == 2 and capsys.readouterr() == (
        "", f"error: {tmp_path} already holds a different sweep ({tmp_path / 'sweep.json'}); "
            "pick another output_dir=...\n")


def folder_contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


SWEEPS = {  # every command that writes a sweep folder (Slurm ones dry: a broken check must not submit)
    "grid": ["sweep", RECIPE, "--sweep", "model.fc1=32,64"],
    "search": ["sweep", RECIPE, "--search", "trainer.lr=log:1e-4..1e-2", "--trials", "2"],
    "slurm grid": ["slurm", "submit", RECIPE, "--sweep", "model.fc1=32,64", "--dry-run"],
    "slurm search": ["slurm", "submit", RECIPE, "--search", "trainer.lr=log:1e-4..1e-2", "--dry-run"],
}


@pytest.mark.parametrize("command", SWEEPS)
def test_a_folder_of_someone_elses_files_is_refused_and_never_touched(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mine"
    (folder / "data").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "data" / "sweep.json").write_text("not at the top: no sweep's")
    before = folder_contents(folder)
    argv = SWEEPS[command]
    at = argv.index(RECIPE) + 1  # overrides come right after the recipe
    code = cli.main([*argv[:at], f"output_dir={folder}", *argv[at:]])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == (f"error: output_dir '{folder}' holds files that are not a zoo sweep's (data, notes.txt); "
                   "nothing there is touched: pick an empty or new folder\n")
    assert folder_contents(folder) == before and sorted(p.name for p in folder.iterdir()) == ["data", "notes.txt"]


def test_a_run_folder_is_not_a_sweep_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A finished `zoo train` run in the recipe's output_dir: the sweep writes nothing beside it."""
    run = tmp_path / "mlp"
    run.mkdir()
    for name in ("recipe.yaml", "metrics.jsonl", "model.safetensors", "summary.json"):
        (run / name).write_text(name)
    assert cli.main(["sweep", RECIPE, f"output_dir={run}", "--sweep", "model.fc1=32,64"]) == 2
    assert capsys.readouterr().err == (f"error: output_dir '{run}' holds files that are not a zoo sweep's "
                                       "(metrics.jsonl, model.safetensors, recipe.yaml and 1 more); nothing there "
                                       "is touched: pick an empty or new folder\n")
    assert not (run / "sweep.json").exists()


def test_the_spec_writer_checks_the_folder_itself(tmp_path: Path) -> None:
    """Files that appear between planning and writing (a Slurm submit's sbatch check) are refused too."""
    spec, _ = build_spec(RECIPE, [f"output_dir={tmp_path / 'sweep'}"], grid=["model.fc1=32,64"])
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "notes.txt").write_text("mine")
    with pytest.raises(ZooError, match=r"holds files that are not a zoo sweep's \(notes.txt\)"):
        write_spec(spec)
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["notes.txt"]


def test_a_sweep_folder_with_its_points_locks_and_report_is_taken_up_again(tmp_path: Path) -> None:
    """What a sweep leaves in its folder is its own: the same sweep goes on there."""
    first, _ = build_spec(RECIPE, [f"output_dir={tmp_path}"], grid=["model.fc1=32,64"])
    write_spec(first)
    for name in ("model.fc1=32", "slurm"):
        (tmp_path / name).mkdir()
    for name in (".sweep.lock", ".optuna.lock", "report.md", "best-recipe.yaml", "sweep.png"):
        (tmp_path / name).write_text("")
    again, _ = build_spec(RECIPE, [f"output_dir={tmp_path}"], grid=["model.fc1=32,64"])
    write_spec(again)
    assert again.identity() == first.identity()


@pytest.mark.parametrize("text", ["{not json", '{"name": "my own sweep config"}', "[1, 2]"])
def test_a_sweep_json_zoo_did_not_write_is_one_line(text: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sweep.json").write_text(text)
    for argv in (["sweep", RECIPE, f"output_dir={tmp_path}", "--sweep", "model.fc1=32,64"],
                 ["sweep", "report", str(tmp_path)]):
        assert cli.main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == (f"error: {tmp_path / 'sweep.json'} is not a zoo sweep's spec; nothing there is "
                                     "touched: give the output_dir a zoo sweep ran in, or pick an empty or new "
                                     "folder\n")
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"] and (tmp_path / "sweep.json").read_text() == text
