"""``zoo.resume_check``: which recipe changes a resume refuses, and which it allows (and says).

The refusals as a user meets them, on a real interrupted run, are in tests/test_resume.py.
"""

from __future__ import annotations

import pytest

from zoo.recipe import Recipe
from zoo.resume_check import resume_changes


def recipe(**sections: dict) -> Recipe:
    return Recipe.model_validate({"model": {"name": "mlp"}, **sections})


RECORDED = recipe(trainer={"epochs": 2}).model_dump(mode="json")


@pytest.mark.parametrize(
    ("now", "allowed"),
    [
        (recipe(trainer={"epochs": 5}), ["trainer.epochs 2 -> 5"]),
        (recipe(trainer={"epochs": 2}, tracking={"log_every": 7, "project": "other"}),
         ["tracking.log_every 50 -> 7", "tracking.project zoo-launch -> other"]),
        (recipe(trainer={"epochs": 2, "compile": "none"}, checkpoint={"every_steps": 9}, data={"num_workers": 0}),
         ["checkpoint.every_steps 0 -> 9", "data.num_workers 2 -> 0", "trainer.compile auto -> none"]),
    ],
)
def test_changes_that_keep_the_trajectory_are_allowed_and_listed(now: Recipe, allowed: list[str]) -> None:
    assert resume_changes(RECORDED, now) == ([], allowed)


@pytest.mark.parametrize(
    ("now", "refused"),
    [
        (recipe(trainer={"epochs": 2, "lr": 0.1}), ["trainer.lr 0.0003 -> 0.1"]),
        (recipe(trainer={"epochs": 2}, data={"batch_size": 64}), ["data.batch_size 128 -> 64"]),
        (recipe(trainer={"epochs": 2}, data={"path": "/data/other"}), ["data.path ylecun/mnist -> /data/other"]),
        (recipe(trainer={"epochs": 2}, seed=1), ["seed 0 -> 1"]),
        (Recipe.model_validate({"model": {"name": "mlp", "fc1": 64}, "trainer": {"epochs": 2}}),
         ["model.fc1 1024 -> 64"]),
    ],
)
def test_changes_that_alter_the_trajectory_are_refused(now: Recipe, refused: list[str]) -> None:
    assert resume_changes(RECORDED, now) == (refused, [])


def test_more_epochs_are_refused_under_a_schedule_that_spans_them() -> None:
    recorded = recipe(trainer={"epochs": 2, "schedule": "cosine"}).model_dump(mode="json")
    assert resume_changes(recorded, recipe(trainer={"epochs": 3, "schedule": "cosine"})) == (
        ["trainer.epochs 2 -> 3"], [])


def test_a_hyperparameter_given_at_its_default_is_no_change() -> None:
    given = Recipe.model_validate({"model": {"name": "mlp", "fc1": 1024, "dropout": 0.5}, "trainer": {"epochs": 2}})
    assert resume_changes(RECORDED, given) == ([], [])
    assert resume_changes(given.model_dump(mode="json"), recipe(trainer={"epochs": 2})) == ([], [])
    # A tuple default: the recorded recipe holds lists, as JSON does.
    bn_mlp = Recipe.model_validate({"model": {"name": "bn_mlp"}}).model_dump(mode="json")
    assert resume_changes(bn_mlp, Recipe.model_validate({"model": {"name": "bn_mlp", "widths": [512, 256, 128]}})) \
        == ([], [])
    assert resume_changes(bn_mlp, Recipe.model_validate({"model": {"name": "bn_mlp", "widths": [512]}})) == (
        ["model.widths [512, 256, 128] -> [512]"], [])
