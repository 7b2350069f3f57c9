"""The MLflow backend against a real ``mlflow server`` started here on 127.0.0.1 (its own local
store is read back from a training run in tests/test_model_selection.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.trackers.readers import mlflow_run
from zoo.trackers import Backends

pytest.importorskip("mlflow")  # a machine without it (e.g. a lent GPU box) skips this file

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = _free_port()
    server = subprocess.Popen(
        [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--artifacts-destination", str(tmp_path / "artifacts")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"),  # noqa: SIM115
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri, server
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)


def test_mlflow_server_records_and_a_stopped_server_only_warns(
    mlflow_server: tuple[str, subprocess.Popen], tmp_path: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri, server = mlflow_server
    tracking = SimpleNamespace(project="zoo-server", name="tiny", tags=["a", "b"], mlflow_uri=uri)
    config = {"trainer": {"lr": 0.001}, "tracking": {"mlflow_uri": uri}}
    backends = Backends.start(["mlflow", "csv"], tmp_path / "run", tracking, config)
    assert backends.names == ["mlflow", "csv"]
    for step in (1, 2, 3):
        backends.log_metrics({"train/loss": 1.0 / step, "epoch/val_acc": 0.5}, step)
    backends.log_summary({"test_acc": 0.875, "stop_reason": "patience"})
    run_id = backends.run_ids["mlflow"]
    backends.close()

    client, run = mlflow_run(uri, "zoo-server")
    assert run.info.run_id == run_id and run.info.status == "FINISHED" and run.info.run_name == "tiny"
    history = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert run.data.params["trainer.lr"] == "0.001" and run.data.tags["zoo.tags"] == "a,b"
    assert run.data.metrics["test_acc"] == 0.875 and run.data.tags["summary.stop_reason"] == "patience"

    # The server goes away mid-run: one warning, the backend dropped, the others go on.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    backends = Backends.start(["mlflow", "csv"], tmp_path / "run2", tracking, config)
    assert backends.names == ["mlflow", "csv"]
    os.killpg(server.pid, 15)
    server.wait(timeout=30)
    backends.log_metrics({"train/loss": 1.0}, 1)
    backends.log_metrics({"train/loss": 0.5}, 2)
    assert backends.names == ["csv"]
    err = capsys.readouterr().err
    assert err.count("tracking backend 'mlflow' could not log metrics") == 1
    backends.close()
    assert (tmp_path / "run2" / "csv" / "metrics.csv").read_text().count("train/loss") == 2

    # And a server that is not there at the start: one warning, no backend.
    assert Backends.start(["mlflow"], tmp_path / "run3", tracking, config).names == []
    assert "tracking backend 'mlflow' could not start" in capsys.readouterr().err
