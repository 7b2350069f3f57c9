#!/usr/bin/env bash
# Set up everything zoo-launch needs in ./.venv (idempotent; fast when nothing changed).
# Sourced by scripts/train.sh and scripts/test.sh; safe to run on its own.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${ZOO_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
stamp="$VENV/.zoo-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ examples/zoo-cnn/pyproject.toml -nt "$stamp" ] || [ examples/zoo-timm/pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch is not pinned: pip picks the newest build the machine's index offers. A CPU-only build
    # would be smaller, but the timm plugin needs torchvision, whose wheels here are built against
    # the CUDA torch (with a CPU torch its operators fail to load), so pip would replace it anyway.
    # ZOO_TORCH chooses another torch first (e.g. ZOO_TORCH="torch==2.14.1").
    if [ -n "${ZOO_TORCH:-}" ] && ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        "$VENV/bin/python" -m pip install -q "$ZOO_TORCH"
    fi
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    # The example plugin package: the tests install it like a user would and train its model.
    "$VENV/bin/python" -m pip install -q -e examples/zoo-cnn
    "$VENV/bin/python" -m pip install -q -e examples/zoo-timm  # timm's architectures as timm/<name>
    touch "$stamp"
fi
# Accelerate's default config, as `accelerate config default` writes it, when the user has none:
# without one every `accelerate launch` opens with a block of "values were not passed" warnings.
# One change: use_cpu stays false. With it true (what accelerate writes on a machine without GPUs)
# every launch still warns that it picked --num_cpu_threads_per_process; zoo builds a CPU
# Accelerator by itself where there is no GPU. An existing config is never touched.
accelerate_config="${HF_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/huggingface}/accelerate/default_config.yaml"
if [ ! -f "$accelerate_config" ]; then
    "$VENV/bin/python" - "$accelerate_config" <<'PY'
import json
import sys
from pathlib import Path

from accelerate.utils import write_basic_config

path = Path(sys.argv[1])
if write_basic_config(save_location=str(path)) is not False:  # False: it exists after all; leave it
    config = json.loads(path.read_text())
    config["use_cpu"] = False
    path.write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote Accelerate's default config to {path} (edit it with: accelerate config)")
PY
fi
