"""``benchmarks/gpu_check.sh``, dry: every command a lent GPU machine would run, on the CPU with tiny settings.

A GPU is lent for minutes, rarely: the script must not waste them on a wrong option, a renamed function or a
bad import. The dry run gives each command its GPU arguments plus a few that make it small, installs nothing,
and must end with every measurement line in its summary, the logs in at most the 8 files a lent machine
sends back, and the carried wheels it would install named right.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, visible_gpus

# On a GPU machine the script itself runs for real (its suite step included): no minutes for a dry copy.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(visible_gpus() > 0, reason="a GPU is here: run gpu_check.sh")]

# What the summary must show: each benchmark's result lines and each pytest run's last line.
MEASUREMENTS = {
    "batch 512 and 16 beside the captured step": (r"^\| zoo-graph \| \d+ \| ", 2),
    "the loop against a hand-written one": (r"^zoo / minimal = \d", 2),
    "the notes' pipeline against the loop": (r"^notes / zoo = \d", 2),
    "trainer.compile=auto at batch 512": (r"^\| zoo-auto \| \d+ \| ", 1),
    "auto with a cosine schedule and clipping": (r"^\| zoo-auto-cosine-clip \| \d+ \| ", 1),
    "time to 96% test accuracy": (r"^(time to 96% test accuracy .* at epoch|96% test accuracy not reached)", 1),
    "the first preparation": (r"^first preparation \(Arrow cache \+ decode \+ write\): \d", 1),
    "the cached start": (r"^cached start to device-ready tensors on cpu: median \d", 1),
    # (the 15-epoch one is the same command dry, so the dry run leaves it out)
    "start-up against the floor": (r"^outside training / floor = \*\*\d", 1),
    "the parity tests and the suite": (r"^\d+ passed", 2),
}
STEPS = 9  # parity, 6 in bench.txt, 1 in startup.txt (2 on a GPU), the suite


def test_dry_run_runs_every_step_and_summarizes_every_measurement(tmp_path: Path) -> None:
    out, wheels = tmp_path / "out", tmp_path / "wheels"
    wheels.mkdir()
    # One wheel of a distribution this python has (a wheel spells its name with _), one of a missing one.
    (wheels / "pydantic_core-2.0.0-cp312-cp312-manylinux_2_17_x86_64.whl").touch()
    missing = wheels / "zoo_absent_distribution-1.0-py3-none-any.whl"
    missing.touch()
    env = {**os.environ, "GPU_CHECK_DRY_RUN": "1", "OUT": str(out), "PYTHON": sys.executable, "ZOO_WHEELS": str(wheels)}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-3000:])

    setup = (out / "setup.txt").read_text()
    assert f"carried wheels to install: {missing}\n" in setup
    assert f"dry run, not run: {sys.executable} -m pip install -q --no-index --no-deps {missing}\n" in setup
    assert "--no-build-isolation -e . -e examples/zoo-cnn -e examples/zoo-timm\n" in setup
    assert re.search(r"^needed: cannot import .*$", setup, re.MULTILINE)
    # A lent machine sends back at most 8 files.
    assert sorted(p.name for p in out.iterdir()) == [
        "bench.txt", "parity.txt", "setup.txt", "startup.txt", "suite.txt", "suite.xml", "summary.txt"]

    summary = (out / "summary.txt").read_text()
    assert proc.stdout.endswith(summary)  # the summary closes what the device call returns
    assert summary.count("\n### ") == STEPS and summary.count("\n# exit 0 after ") == STEPS, summary
    for what, (pattern, count) in MEASUREMENTS.items():
        assert len(re.findall(pattern, summary, re.MULTILINE)) == count, f"{what}: {pattern}\n{summary}"
    assert summary.endswith("failed steps: none\n")
