"""Where a run's numbers go: ``metrics.jsonl`` in the run folder, and Weights & Biases.

Only the main process tracks. ``wandb`` is imported only when W&B is on, and a W&B failure is
reported in one line and never stops training.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class Tracker:
    """Appends records to ``metrics.jsonl`` and mirrors them to W&B when it is on."""

    def __init__(self, output_dir: Path, tracking: Any, config: dict[str, Any], enabled: bool,
                 resume_run_id: str | None = None) -> None:
        self.enabled = enabled
        self.metrics_path = output_dir / "metrics.jsonl"
        self.wandb_run: Any = None
        if not enabled:
            return
        if tracking.wandb:
            self.wandb_run = _start_wandb(output_dir, tracking, config, resume_run_id)

    @property
    def wandb_run_id(self) -> str | None:
        return self.wandb_run.id if self.wandb_run is not None else None

    def log_epoch(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._append(record)
        self._wandb_log({f"epoch/{k}" if k != "epoch" else k: v for k, v in record.items() if v is not None})

    def log_step(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._append(record)
        self._wandb_log({f"train/{k}": v for k, v in record.items()})

    def finish(self, summary: dict[str, Any]) -> None:
        if not self.enabled or self.wandb_run is None:
            return
        try:
            self.wandb_run.summary.update(summary)
            self.wandb_run.finish()
        except Exception as exc:  # never let tracking end a finished run badly
            print(f"warning: W&B finish failed ({type(exc).__name__}: {exc}); local files are complete", file=sys.stderr)

    def _append(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def _wandb_log(self, values: dict[str, Any]) -> None:
        if self.wandb_run is None:
            return
        try:
            self.wandb_run.log(values)
        except Exception as exc:
            print(f"warning: W&B logging stopped ({type(exc).__name__}: {exc}); training goes on", file=sys.stderr)
            self.wandb_run = None


def _start_wandb(output_dir: Path, tracking: Any, config: dict[str, Any], resume_run_id: str | None) -> Any:
    try:
        import wandb
    except ImportError:
        print("warning: tracking.wandb is on but wandb is not installed; pip install wandb, or set tracking.wandb=false",
              file=sys.stderr)
        return None
    mode = os.environ.get("WANDB_MODE")
    if mode is None and not _has_wandb_credentials():
        mode = "offline"
        print(f"W&B: no API key found, logging offline; upload later with `wandb sync {output_dir}/wandb/latest-run`")
    try:
        return wandb.init(
            project=tracking.project, entity=tracking.entity, name=tracking.name or output_dir.name,
            tags=tracking.tags or None, config=config, dir=str(output_dir), mode=mode,
            id=resume_run_id, resume="allow" if resume_run_id else None,
        )
    except Exception as exc:
        print(f"warning: W&B could not start ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
              "training goes on without it (set tracking.wandb=false to silence this)", file=sys.stderr)
        return None
