#!/usr/bin/env bash
# Set up on a fresh machine, then run the whole test suite: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export WANDB_MODE=offline WANDB_SILENT=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# Two pytest-xdist workers: most of the suite's time goes to starting Python processes that import
# torch (one core each) and to waiting on Slurm, Docker and servers, so a lone worker leaves the second
# core idle. Whole modules go to one worker, in the order tests/conftest.py gives (services and real
# training first), so a module's shared run happens once. ZOO_TEST_WORKERS=0 runs them one at a time.
exec .venv/bin/python -m pytest -n "${ZOO_TEST_WORKERS:-2}" --dist loadscope --no-loadscope-reorder "$@"
