"""``metrics.jsonl``: a run's records, one JSON object a line, appended as the run goes; written here only.

The tracker (:mod:`zoo.tracking`) decides what goes in: ``{"kind": "step", ...}`` window records,
``{"kind": "epoch", ...}`` records and ``{"kind": "val", ...}`` records. A resumed run first cuts the
file back to what came before the checkpoint it continues (:func:`cut_back`), so no record is there
twice. Values that are not finite are written as ``null``: ``NaN`` is not JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from zoo.errors import warn

METRICS_FILE = "metrics.jsonl"


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float as None: ``json.dumps`` would write ``NaN``, which is not JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    return value


def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    with (Path(run_dir) / METRICS_FILE).open("a") as f:
        f.write(json.dumps(strict_json(record), allow_nan=False) + "\n")


def cut_back(run_dir: Path, epoch: int, global_step: int, fresh: bool) -> None:
    """Make ``metrics.jsonl`` hold exactly what came before epoch ``epoch`` and step ``global_step``:
    nothing for a ``fresh`` start (an unfinished attempt that left no checkpoint), else what precedes
    the checkpoint resumed."""
    path = Path(run_dir) / METRICS_FILE
    if fresh:
        path.unlink(missing_ok=True)
        return
    if not path.is_file():
        return
    kept = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # torn by a crash mid-write: what it held is written again
            warn(f"{path} line {number} of {len(lines)} is damaged; dropped")
            continue
        is_epoch = record.get("kind") == "epoch"
        if (is_epoch and record["epoch"] <= epoch) or (not is_epoch and record["global_step"] <= global_step):
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept))
