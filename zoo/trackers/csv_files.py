"""The ``csv`` tracking backend: plain files any spreadsheet or ``csv.DictReader`` opens.

This module alone writes, under ``<output_dir>/csv/``::

    metrics.csv   step,name,value   one row per metric value (long format: records differ in keys)
    config.csv    name,value        the resolved recipe, one row per ``section.key``
    summary.csv   name,value        the run's summary, written at the end

A resumed job first drops the metric rows a killed attempt wrote after the checkpoint.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from zoo.trackers.values import flatten

FOLDER = "csv"


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict | bool) or value is None else value


def _write_pairs(path: Path, pairs: dict[str, Any]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "value"])
        writer.writerows((name, _cell(value)) for name, value in pairs.items())


class CsvBackend:
    name = "csv"
    run_id = None

    def __init__(self, output_dir: Path, config: dict[str, Any], resume_step: int | None) -> None:
        self.folder = Path(output_dir) / FOLDER
        self.folder.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.folder / "metrics.csv"
        kept: list[list[str]] = []
        if resume_step is not None and self.metrics_path.is_file():
            with self.metrics_path.open(newline="") as f:
                kept = [row for row in list(csv.reader(f))[1:] if int(row[0]) <= resume_step]
        with self.metrics_path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "name", "value"])
            writer.writerows(kept)
        _write_pairs(self.folder / "config.csv", flatten(config))
        self._file = self.metrics_path.open("a", newline="")
        self._writer = csv.writer(self._file)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        self._writer.writerows((step, key, repr(value)) for key, value in values.items())
        self._file.flush()  # a killed run keeps every row it logged

    def log_summary(self, summary: dict[str, Any]) -> None:
        _write_pairs(self.folder / "summary.csv", flatten(summary))

    def close(self) -> None:
        self._file.close()
