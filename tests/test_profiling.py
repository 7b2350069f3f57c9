"""The step profiler writes a Chrome trace and an operator table for its window only."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from zoo.profiling import StepProfiler


def _steps(profiler: StepProfiler, n: int) -> None:
    weight = torch.randn(64, 64)
    for _ in range(n):
        (weight @ weight).relu_()
        profiler.step()


def test_trace_and_table_of_the_window(tmp_path: Path) -> None:
    with StepProfiler(tmp_path, steps=3, wait=2, warmup=1) as profiler:
        _steps(profiler, 10)
    trace = json.loads((tmp_path / "profile" / "trace.json").read_text())
    steps = sorted({e["name"] for e in trace["traceEvents"] if e.get("name", "").startswith("ProfilerStep#")})
    assert steps == ["ProfilerStep#3", "ProfilerStep#4", "ProfilerStep#5"]  # after 2 waited and 1 warm-up
    table = (tmp_path / "profile" / "ops.txt").read_text()
    assert "3 optimizer step(s)" in table and "aten::mm" in table


def test_short_run_writes_a_partial_window_or_warns(tmp_path: Path, capsys) -> None:
    with StepProfiler(tmp_path / "partial", steps=20, wait=1, warmup=1) as profiler:
        _steps(profiler, 5)
    assert (tmp_path / "partial" / "profile" / "trace.json").is_file()
    with StepProfiler(tmp_path / "none", steps=20, wait=10, warmup=1) as profiler:
        _steps(profiler, 3)
    assert not (tmp_path / "none" / "profile").exists()
    assert "trainer.profile wrote no trace" in capsys.readouterr().err
