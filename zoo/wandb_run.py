"""Weights & Biases start-up: exactly one run per job, resumable by id, offline when there is no
API key or no server to reach. ``wandb`` is imported only here, only when W&B is on."""

from __future__ import annotations

import netrc
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from zoo.errors import warn


def _wandb_server() -> tuple[str, int]:
    """The W&B server's host and port: ``WANDB_BASE_URL`` (a self-hosted server), else W&B's cloud."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    return url.hostname or "api.wandb.ai", url.port or (443 if url.scheme == "https" else 80)


def has_wandb_credentials() -> bool:
    """An API key in ``WANDB_API_KEY``, or a ``.netrc`` entry for the server runs would go to.

    ``wandb login`` writes the entry under the server's host name, so a self-hosted server
    (``WANDB_BASE_URL``) has its own host there, not ``api.wandb.ai``.
    """
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    host, _ = _wandb_server()
    try:
        if not path.is_file():
            return False
        try:
            return netrc.netrc(str(path)).authenticators(host) is not None
        except netrc.NetrcParseError:  # a file netrc cannot parse: look for the entry as text
            return f"machine {host}" in path.read_text(errors="ignore")
    except OSError:
        return False


def _wandb_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP connect to the W&B server, so a cluster without internet never waits on init."""
    try:
        with socket.create_connection(_wandb_server(), timeout=timeout):
            return True
    except OSError:
        return False


def start_wandb(output_dir: Path, tracking: Any, config: dict[str, Any], resume_run_id: str | None) -> Any:
    try:
        import wandb
    except ImportError:
        warn("tracking.wandb is on but wandb is not installed; pip install wandb, or set tracking.wandb=false")
        return None
    mode, why = os.environ.get("WANDB_MODE"), "WANDB_MODE is offline"
    if mode is None:
        if not has_wandb_credentials():
            mode, why = "offline", "no W&B API key found"
        elif not _wandb_reachable():
            mode, why = "offline", "the W&B server is not reachable"
    if mode in ("offline", "dryrun"):
        # Every attempt of a resumed job writes its own offline-run-* folder under the same run id.
        print(f"[zoo] W&B offline ({why}); upload later with: wandb sync {output_dir}/wandb/offline-run-*",
              flush=True)
    try:
        run = wandb.init(
            project=tracking.project, entity=tracking.entity, name=tracking.name or output_dir.name,
            group=getattr(tracking, "group", None),
            tags=tracking.tags or None, config=config, dir=str(output_dir), mode=mode,
            id=resume_run_id, resume="allow" if resume_run_id else None,
            # Offline, the line above already says where the run is and how to upload it: W&B's
            # own footer (run history, summary, the same `wandb sync` hint) would add ~40 lines.
            settings=wandb.Settings(quiet=True) if mode in ("offline", "dryrun") else None,
        )
        # Epoch records plot against the epoch; everything else against the optimizer step.
        run.define_metric("epoch")
        run.define_metric("epoch/*", step_metric="epoch")
        return run
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        warn(f"W&B could not start ({type(exc).__name__}: {first_line}); training goes on without it "
              "(set tracking.wandb=false to silence this)")
        return None
