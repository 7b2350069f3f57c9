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
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ examples/zoo-cnn/pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        # Without a GPU a CPU build of torch is all that is needed and is much smaller;
        # ZOO_TORCH overrides the choice (e.g. ZOO_TORCH="torch==2.14.1").
        if [ -n "${ZOO_TORCH:-}" ]; then
            "$VENV/bin/python" -m pip install -q "$ZOO_TORCH"
        elif ! command -v nvidia-smi >/dev/null 2>&1; then
            "$VENV/bin/python" -m pip install -q "torch==2.13.0" 2>/dev/null || "$VENV/bin/python" -m pip install -q torch
        fi
    fi
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    # The example plugin package: the tests install it like a user would and train its model.
    "$VENV/bin/python" -m pip install -q -e examples/zoo-cnn
    touch "$stamp"
fi
