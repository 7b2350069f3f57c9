#!/usr/bin/env bash
# The GPU checks of issue 3, as one short script for a lent GPU machine (see BENCHMARKS.md):
#   bash benchmarks/gpu_check.sh        # writes its logs to $OUT (or ./gpu-check) as well as stdout
# Trains on the MNIST sample the package ships (zoo/samples/mnist). Never run yet: no GPU was
# lent to the session that wrote it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-gpu-check}
mkdir -p "$out"
python -m pip install -q -e ".[dev]" 2>&1 | tail -2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/card.txt"
export WANDB_MODE=offline HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
python -m pytest -q tests/test_step.py 2>&1 | tee "$out/test_step.txt"
python benchmarks/epoch_speed.py --device cuda --batch-size 512 --compile graph 2>&1 | tee "$out/batch512.txt"
python benchmarks/epoch_speed.py --device cuda --batch-size 16 --epochs 2 --compile graph 2>&1 | tee "$out/batch16.txt"
python benchmarks/prepare_speed.py --device cuda 2>&1 | tee "$out/prepare.txt"
# trainer.compile=auto (the default) against graph at batch 512, a cosine schedule with clipping
# captured, and the start-up breakdown and time to 96% test accuracy on the bundled sample.
python benchmarks/epoch_speed.py --device cuda --batch-size 512 --pipelines minimal --compile auto 2>&1 | tee "$out/batch512_auto.txt"
python benchmarks/epoch_speed.py --device cuda --batch-size 512 --pipelines minimal --compile auto --schedule cosine --grad-clip 1.0 2>&1 | tee "$out/batch512_cosine_clip.txt"
python benchmarks/epoch_speed.py --device cuda --time-to-accuracy 2>&1 | tee "$out/time_to_96.txt"
python benchmarks/startup.py --rounds 3 2>&1 | tee "$out/startup.txt"
python benchmarks/startup.py --rounds 3 --epochs 15 2>&1 | tee "$out/startup_15_epochs.txt"
