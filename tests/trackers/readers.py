"""Read back what each tracking backend recorded, with the tool's own reader."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def tensorboard_events(folder: Path) -> Any:
    """TensorBoard's EventAccumulator over a run's event files, everything kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    events = tensorboard_events(folder)
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def tensorboard_steps(folder: Path, tag: str) -> list[int]:
    return [e.step for e in tensorboard_events(folder).Scalars(tag)]


def tensorboard_text(folder: Path, tag: str) -> str:
    (event, *_) = tensorboard_events(folder).Tensors(f"{tag}/text_summary")
    return event.tensor_proto.string_val[0].decode()


def csv_metrics(folder: Path) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def csv_pairs(path: Path) -> dict[str, str]:
    with path.open(newline="") as f:
        return {row["name"]: row["value"] for row in csv.DictReader(f)}


def mlflow_run(uri: str, experiment: str) -> tuple[Any, Any]:
    """(client, the experiment's only run) from an MLflow store or server."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]
