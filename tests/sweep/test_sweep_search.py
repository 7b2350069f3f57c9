"""zoo.sweep.search against a real SQLite Optuna storage: the budget, workers resuming their own
trials, retries of failed trials in the same folder. No training: outcomes are told directly."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.errors import ZooError
from zoo.sweep.point import Outcome
from zoo.sweep.search import SearchEngine, enqueue_retries, open_study
from zoo.sweep.spec import SweepSpec, build_spec

optuna = pytest.importorskip("optuna")  # a lent GPU machine has no optuna: skip there, not a collection error

REPO = Path(__file__).resolve().parents[2]
RECIPE = str(REPO / "recipes" / "mlp.yaml")


@pytest.fixture
def spec(tmp_path: Path) -> SweepSpec:
    spec, _ = build_spec(RECIPE, [f"output_dir={tmp_path}"], search=["trainer.lr=log:1e-4..1e-2", "model.fc2=64,128"],
                         trials=2)
    return spec


def test_trials_sample_the_space_within_the_budget(spec: SweepSpec) -> None:
    engine = SearchEngine(spec, seed=0)
    first, second = engine.next_point(), engine.next_point()
    assert first is not None and second is not None and engine.next_point() is None  # 2 trials, both running
    assert (first.name, second.name) == ("trial-000", "trial-001") and first.folder == spec.folder / "trial-000"
    lr = float(first.varied[0].split("=")[1])
    assert first.varied[0].startswith("trainer.lr=") and 1e-4 <= lr <= 1e-2
    assert first.varied[1] in ("model.fc2=64", "model.fc2=128")
    engine.finish(first, Outcome("finished", value=0.9))
    engine.finish(second, Outcome("pruned", pruned_at_epoch=1))
    study = optuna.load_study(study_name="zoo-sweep", storage=spec.storage_url())
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"] and study.best_trial.value == 0.9


def test_a_restarted_worker_resumes_its_own_running_trial(spec: SweepSpec) -> None:
    task0 = SearchEngine(spec, worker="slurm-task-0", seed=0)
    running = task0.next_point()  # then task 0 is preempted: the trial stays RUNNING
    assert running is not None
    requeued = SearchEngine(spec, worker="slurm-task-0", seed=0)
    assert requeued.notes == ["trial 0: resuming"]
    again = requeued.next_point()
    assert again is not None and (again.name, again.varied) == (running.name, running.varied)
    other = SearchEngine(spec, worker="slurm-task-1", seed=1).next_point()  # never takes task 0's trial
    assert other is not None and other.trial == 1
    requeued.finish(again, Outcome("finished", value=0.5))
    assert optuna.load_study(study_name="zoo-sweep", storage=spec.storage_url()).trials[0].value == 0.5


def test_a_failed_trial_is_retried_in_its_folder_only_when_asked(spec: SweepSpec) -> None:
    engine = SearchEngine(spec, seed=0)
    failed = engine.next_point()
    assert failed is not None
    engine.finish(failed, Outcome("failed", error="exit code 2: error: boom"))
    (spec.folder / failed.name).mkdir()
    later = SearchEngine(spec, seed=0)
    assert later.failed_before == 1 and "trial 0: failed" in later.notes[0]
    assert enqueue_retries(open_study(spec)) == 1 and enqueue_retries(open_study(spec)) == 0  # queued once
    retry_engine = SearchEngine(spec, seed=0)
    retry = retry_engine.next_point()
    assert retry is not None and retry.trial == 1
    assert (retry.name, retry.params) == (failed.name, failed.params)  # same folder: resumes its checkpoint
    fresh = retry_engine.next_point()  # the retry used no budget: one more new trial fits
    assert fresh is not None and fresh.name == "trial-002" and retry_engine.next_point() is None


def test_an_unreachable_storage_is_one_line(tmp_path: Path) -> None:
    spec, _ = build_spec(RECIPE, [f"output_dir={tmp_path}"], search=["trainer.lr=log:1e-4..1e-2"],
                         storage=f"sqlite:///{tmp_path}/no/such/dir/optuna.db")
    with pytest.raises(ZooError, match=r"cannot open the Optuna storage sqlite:///.*: \(sqlite3.OperationalError\) "
                       r"unable to open database file; check --storage"):
        open_study(spec)
