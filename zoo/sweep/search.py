"""The Optuna engine: points are trials of one study, sampled from the ``--search`` space.

The study lives in an Optuna storage: ``optuna.db`` (SQLite) in the sweep folder unless a storage
URL is given, so any number of workers (threads here, Slurm array tasks, other machines) take
trials from it. Trial ``n`` trains into ``trial-<n>``; its parameters are the varied overrides.

Resuming: every trial records the worker that runs it (``local``, or ``slurm-task-<i>``). A worker
that starts again finds its own trials still RUNNING (it was killed, or preempted and requeued),
and trains each again in its folder, where the run resumes from its checkpoint; then it tells the
study. Optuna's heartbeat would fail such trials instead, and it only works inside
``Study.optimize``, not with ask and tell. A failed trial stays failed; ``enqueue_retries`` puts
its parameters back in the queue (user attribute ``retry_of``), to train in the same folder.

The budget counts points, not attempts: a retry does not use up a trial. Asking and counting
happen under a file lock in the sweep folder, so two workers never overshoot the budget.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.sweep.point import Outcome, Point, point_status, read_metric, read_point
from zoo.sweep.spec import SweepSpec, trial_dirname

STUDY_NAME = "zoo-sweep"
# Per-epoch value reported for pruning, for each metric a sweep can optimise.
INTERMEDIATE = {"best_val_acc": "val_acc", "test_acc": "val_acc", "val_acc": "val_acc",
                "test_loss": "val_loss", "val_loss": "val_loss", "train_loss": "train_loss"}
LOCK_FILE = ".optuna.lock"


@contextlib.contextmanager
def sweep_lock(folder: Path) -> Iterator[None]:
    """Held while a worker counts and asks for trials (works across processes and machines)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_study(spec: SweepSpec, seed: int | None = None) -> Any:
    """The sweep's study, created on first use; a storage that cannot be opened is one line."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = spec.storage_url()
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if spec.prune
              else optuna.pruners.NopPruner())
    try:
        with sweep_lock(spec.folder):
            storage: Any = url
            if url.startswith("sqlite:"):
                # Several workers write one SQLite file: wait for its lock rather than fail at once.
                storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
            return optuna.create_study(storage=storage, study_name=STUDY_NAME, direction=spec.direction,
                                       sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner,
                                       load_if_exists=True)
    except Exception as exc:  # any storage backend's own error: name the storage and the reason
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ZooError(f"cannot open the Optuna storage {url}: {reason}; check --storage") from None


def distributions(spec: SweepSpec) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space: dict[str, Any] = {}
    for axis in spec.axes:
        if not axis.is_range:
            space[axis.key] = CategoricalDistribution(list(axis.values))
        elif axis.integer:
            space[axis.key] = IntDistribution(int(axis.low), int(axis.high), log=axis.log)  # type: ignore[arg-type]
        else:
            space[axis.key] = FloatDistribution(float(axis.low), float(axis.high), log=axis.log)  # type: ignore[arg-type]
    return space


def trial_point(trial: Any, folder: Path) -> Point:
    varied = [f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"
              for key, value in trial.params.items()]
    name = trial.user_attrs.get("dir") or trial_dirname(trial.number)
    return Point(name=name, folder=folder / name, varied=varied, trial=trial.number, params=dict(trial.params))


def enqueue_retries(study: Any) -> int:
    """Queue every failed trial's parameters again, once; returns how many were queued."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    queued = 0
    for trial in trials:
        origin = trial.user_attrs.get("retry_of", trial.number)
        if trial.state == TrialState.FAIL and trial.number not in retried and not _superseded(trials, trial):
            study.enqueue_trial(trial.params, user_attrs={"retry_of": origin, "dir": trial.user_attrs.get("dir")})
            queued += 1
    return queued


def _superseded(trials: list[Any], failed: Any) -> bool:
    """A later attempt of the same point exists (a retry of a retry)."""
    origin = failed.user_attrs.get("retry_of", failed.number)
    return any(t.number > failed.number and t.user_attrs.get("retry_of") == origin for t in trials)


class SearchEngine:
    """Asks the study for trials until the budget is spent; tells it how each ended."""

    def __init__(self, spec: SweepSpec, worker: str = "local", seed: int | None = None) -> None:
        from optuna.trial import TrialState

        self.spec, self.worker = spec, worker
        self.study = open_study(spec, seed)
        self.space = distributions(spec)
        self.notes: list[str] = []
        self.failed_before = 0
        self._lock = threading.Lock()
        self._active: dict[int, tuple[Any, set[int]]] = {}  # trial number -> (Trial, epochs reported)
        trials = self.study.get_trials(deepcopy=False)
        self._resume = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("worker") == worker]
        for t in trials:
            if t.state == TrialState.FAIL and not _superseded(trials, t):
                error = read_point(spec.folder / t.user_attrs.get("dir", "")).get("error", "no error recorded")
                self.notes.append(f"trial {t.number}: failed ({error}); --retry-failed runs it again")
                self.failed_before += 1
        self.notes += [f"trial {t.number}: resuming" for t in self._resume]

    def next_point(self) -> Point | None:
        import optuna

        with self._lock, sweep_lock(self.spec.folder):
            while self._resume:
                frozen = self._resume.pop(0)
                trial = optuna.Trial(self.study, frozen._trial_id)  # the RUNNING trial this worker owns
                point = trial_point(frozen, self.spec.folder)
                if point_status(point.folder) == "finished":  # trained, but the study never heard
                    self.study.tell(trial, read_metric(point.folder, self.spec.metric))
                    continue
                self._active[frozen.number] = (trial, set(frozen.intermediate_values))
                return point
            trial = self._ask()
            if trial is None:
                return None
            point = trial_point(trial, self.spec.folder)
            trial.set_user_attr("dir", point.name)
            trial.set_user_attr("worker", self.worker)
            self._active[trial.number] = (trial, set())
            return point

    def _ask(self) -> Any:
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        points = sum(1 for t in trials if "retry_of" not in t.user_attrs)
        if not waiting and points >= self.spec.trials:
            return None
        return self.study.ask(self.space)

    def watcher(self, point: Point) -> Callable[[dict[str, Any]], bool] | None:
        if not self.spec.prune:
            return None
        trial, reported = self._active[point.trial]  # type: ignore[index]
        key = INTERMEDIATE[self.spec.metric]

        def should_prune(record: dict[str, Any]) -> bool:
            value, epoch = record.get(key), int(record["epoch"])
            if value is None:
                return False
            with self._lock:
                if epoch not in reported:
                    trial.report(float(value), step=epoch)
                    reported.add(epoch)
                return trial.should_prune()

        return should_prune

    def finish(self, point: Point, outcome: Outcome) -> None:
        from optuna.trial import TrialState

        with self._lock:
            trial, _ = self._active.pop(point.trial)  # type: ignore[arg-type]
            if outcome.status == "finished" and outcome.value is not None:
                self.study.tell(trial, outcome.value)
            elif outcome.status == "pruned":
                self.study.tell(trial, state=TrialState.PRUNED)
            elif outcome.status != "stopped":  # stopped trials stay RUNNING: this worker resumes them
                trial.set_user_attr("error", outcome.error or f"no {self.spec.metric} recorded")
                self.study.tell(trial, state=TrialState.FAIL)
