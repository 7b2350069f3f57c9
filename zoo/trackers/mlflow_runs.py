"""The ``mlflow`` tracking backend: one MLflow run per job, in an experiment named ``tracking.project``.

Where: ``tracking.mlflow_uri`` when set (an ``http://`` tracking server, a database URI, ...), else a
store of the run's own, ``sqlite:///<output_dir>/mlruns/mlflow.db`` with artifacts beside it in
``mlruns/artifacts`` (MLflow's plain-file store is in maintenance mode and refuses to start without
an opt-out, so the local store is the SQLite one it recommends). Read it with
``mlflow ui --backend-store-uri sqlite:///<output_dir>/mlruns/mlflow.db`` or ``MlflowClient``.

The recipe goes in as parameters (``section.key``), metrics as metric histories against the
optimizer step, the summary's numbers as metrics and the rest as ``summary.<name>`` tags. A
resumed job continues the same run (its id is kept with the checkpoints); MLflow cannot delete
metric values, so steps a killed attempt logged after its checkpoint appear twice in the history.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from zoo.trackers.values import flatten, numbers

FOLDER = "mlruns"
PARAM_LIMIT = 6000  # characters MLflow keeps of a parameter value
BATCH = 100  # parameters per log_batch call, MLflow's limit


def local_store(output_dir: Path) -> tuple[str, str]:
    """The tracking URI and artifact folder of a run's own MLflow store."""
    folder = (Path(output_dir) / FOLDER).resolve()
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


class MlflowBackend:
    name = "mlflow"

    def __init__(self, output_dir: Path, tracking: Any, config: dict[str, Any], run_id: str | None) -> None:
        from mlflow.tracking import MlflowClient

        artifacts = None
        uri = getattr(tracking, "mlflow_uri", None)
        if not uri:
            (Path(output_dir) / FOLDER).mkdir(parents=True, exist_ok=True)
            uri, artifacts = local_store(output_dir)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.step = 0
        if run_id is not None:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        experiment = self.client.get_experiment_by_name(tracking.project)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(tracking.project, artifact_location=artifacts))
        tags = {"zoo.output_dir": str(Path(output_dir).resolve())}
        if tracking.tags:
            tags["zoo.tags"] = ",".join(tracking.tags)
        run = self.client.create_run(experiment_id, run_name=tracking.name or Path(output_dir).name, tags=tags)
        self.run_id = run.info.run_id
        self._log_params(flatten(config))

    def _log_params(self, values: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(key, str(value)[:PARAM_LIMIT]) for key, value in values.items()]
        for start in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + BATCH])

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        self.step = step
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def log_summary(self, summary: dict[str, Any]) -> None:
        from mlflow.entities import Metric, RunTag

        plottable = numbers(summary)
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, self.step) for k, v in plottable.items()]
        tags = [RunTag(f"summary.{k}", str(v)[:PARAM_LIMIT]) for k, v in flatten(summary).items() if k not in plottable]
        self.client.log_batch(self.run_id, metrics=metrics, tags=tags)

    def close(self) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED")
