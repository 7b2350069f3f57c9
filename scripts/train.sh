#!/usr/bin/env bash
# Set up on a fresh machine, then train: bash scripts/train.sh [recipe] [section.key=value ...]
# Extra `accelerate launch` flags go in ACCELERATE_ARGS, e.g. ACCELERATE_ARGS="--multi_gpu --num_processes 2".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
recipe=${1:-recipes/mlp.yaml}
shift || true
# -q: a run that fails says why in one `error:` line; without it accelerate adds its own
# CalledProcessError traceback after that line (one process; torchrun's report stays with --multi_gpu).
# shellcheck disable=SC2086
exec .venv/bin/accelerate launch -q ${ACCELERATE_ARGS:-} launch/train.py "$recipe" "$@"
