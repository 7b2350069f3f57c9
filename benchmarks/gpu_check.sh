#!/usr/bin/env bash
# The checks for a lent GPU machine (see BENCHMARKS.md): the whole test suite, then the GPU timings.
#   bash benchmarks/gpu_check.sh [all|suite|bench]      # default all; logs to $OUT (or ./gpu-check) and stdout
# Ready for a machine that has only python, torch, accelerate and pytest and no package index: what
# else the package and the suite import comes from wheels carried beside the checkout in gpu-wheels/
# (an ignored folder; BENCHMARKS.md says how to fetch them), installed into this python with
# pip --no-index --no-deps, only for distributions it does not have yet. Tests whose tools are not
# there (Slurm, Docker, optuna, wandb, tensorboard, mlflow) skip.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-gpu-check}
python=${PYTHON:-python3}
wheels=${ZOO_WHEELS:-gpu-wheels}
what=${1:-all}
mkdir -p "$out"
export WANDB_MODE=offline WANDB_SILENT=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi: not found"
    "$python" -c "import sys, torch, accelerate; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| cuda', torch.version.cuda, '| gpus', torch.cuda.device_count(), '| accelerate', accelerate.__version__)"
} 2>&1 | tee "$out/machine.txt"

missing=()
for wheel in "$wheels"/*.whl; do
    [ -e "$wheel" ] || continue
    name=$(basename "$wheel" | cut -d- -f1)
    "$python" -c "import importlib.metadata, sys; importlib.metadata.version(sys.argv[1])" "$name" 2>/dev/null \
        || missing+=("$wheel")
done
{
    echo "carried wheels to install: ${missing[*]:-none}"
    if [ ${#missing[@]} -gt 0 ]; then
        "$python" -m pip install -q --no-index --no-deps "${missing[@]}"
    fi
    # zoo itself and the example plugin the tests train, editable, built by the setuptools already here.
    "$python" -m pip install -q --no-index --no-deps --no-build-isolation -e . -e examples/zoo-cnn
    "$python" - <<'PY'
import importlib.util

needed = ["datasets", "pydantic", "yaml", "safetensors", "numpy", "PIL", "matplotlib", "tqdm", "zoo", "zoo_cnn"]
optional = ["wandb", "optuna", "tensorboard", "mlflow", "onnx", "onnxruntime", "dockerfile", "pytest_timeout"]
for kind, names in (("needed", needed), ("optional (their tests skip)", optional)):
    absent = [name for name in names if importlib.util.find_spec(name) is None]
    print(f"{kind}: missing {', '.join(absent) or 'nothing'}")
PY
} 2>&1 | tee "$out/install.txt"

status=0
if [ "$what" = all ] || [ "$what" = suite ]; then
    # Multi-process tests run CPU processes (gloo) where there are fewer GPUs than processes.
    "$python" -m pytest -q -rs --durations=25 -p no:cacheprovider --junitxml "$out/suite.xml" 2>&1 \
        | tee "$out/suite.txt"
    status=${PIPESTATUS[0]}
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
    "$python" benchmarks/epoch_speed.py --device cuda --batch-size 512 --compile graph 2>&1 | tee "$out/batch512.txt"
    "$python" benchmarks/epoch_speed.py --device cuda --batch-size 16 --epochs 2 --compile graph 2>&1 \
        | tee "$out/batch16.txt"
    "$python" benchmarks/prepare_speed.py --device cuda 2>&1 | tee "$out/prepare.txt"
    # trainer.compile=auto (the default) against graph at batch 512, a cosine schedule with clipping
    # captured, and the start-up breakdown and time to 96% test accuracy on the bundled sample.
    "$python" benchmarks/epoch_speed.py --device cuda --batch-size 512 --pipelines minimal --compile auto 2>&1 \
        | tee "$out/batch512_auto.txt"
    "$python" benchmarks/epoch_speed.py --device cuda --batch-size 512 --pipelines minimal --compile auto \
        --schedule cosine --grad-clip 1.0 2>&1 | tee "$out/batch512_cosine_clip.txt"
    "$python" benchmarks/epoch_speed.py --device cuda --time-to-accuracy 2>&1 | tee "$out/time_to_96.txt"
    "$python" benchmarks/startup.py --rounds 3 2>&1 | tee "$out/startup.txt"
    "$python" benchmarks/startup.py --rounds 3 --epochs 15 2>&1 | tee "$out/startup_15_epochs.txt"
fi
exit "$status"
