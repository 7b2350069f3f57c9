#!/usr/bin/env bash
# The checks for a lent GPU machine (see BENCHMARKS.md), most valuable first, each into its log under
# $OUT (or ./gpu-check), so that what finished comes back even when the run is cut short:
#   1. parity: tests/test_step.py, the captured step against the plain one on the GPU;
#   2. bench:  every GPU timing of issue 18 (bench.txt: epoch_speed and prepare_speed; startup.txt);
#   3. suite:  the rest of the test suite (suite.txt, suite.xml).
# summary.txt, rewritten after every step and printed at the end: every measurement line and which steps
# failed (the exit status is 1 if any did). Expected on an H100: setup and parity 2-3 minutes, bench about
# 7, so one device call (carry gpu-wheels, timeout_s near 590) gets parity and bench and as much of the
# suite as fits; the suite's own run needs another call (`suite`).
#
#   bash benchmarks/gpu_check.sh [all|parity|bench|suite]   # default all; suite alone is the whole suite
#   GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh          # the same commands on the CPU, tiny, nothing installed
#   bash benchmarks/gpu_check.sh wheels                       # here, with a package index: fetch gpu-wheels/
#
# The dry run (tests/test_gpu_check.py runs it) gives every command its GPU arguments plus a few that
# make it small (argparse keeps the last value given), so a typo, a renamed option or a broken import
# shows on a CPU instead of costing the GPU's minutes. The lent machine's limits shape the rest: at most
# 8 files come back from $OUT (here 7), one command runs at most 10 minutes, and the whole loan is 15.
#
# Ready for a machine that has only python 3.12, torch, accelerate, pytest and no package index: what else
# the package and the suite import comes from wheels carried beside the checkout in gpu-wheels/ (ignored
# by git; `wheels` fetches them from benchmarks/gpu-wheels.txt; name gpu-wheels in the device call's
# carry), installed into this python with pip --no-index --no-deps, only for distributions it does not
# have yet. Tests whose tools are not there (Slurm, Docker, optuna, wandb, mlflow) skip.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-gpu-check}
python=${PYTHON:-python3}
wheels=${ZOO_WHEELS:-gpu-wheels}
what=${1:-all}
dry=${GPU_CHECK_DRY_RUN:-}
case "$what" in
    all | parity | bench | suite) ;;
    wheels)
        # The lent machine's python (3.12, x86-64 Linux); pure-Python wheels match any platform.
        exec "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$wheels" -r benchmarks/gpu-wheels.txt ;;
    *) echo "error: unknown step '$what'; choose all, parity, bench, suite or wheels" >&2; exit 2 ;;
esac
mkdir -p "$out"
export WANDB_MODE=offline WANDB_SILENT=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1

if [ -n "$dry" ]; then
    device=cpu
    parity_tests=(tests/test_step.py -k "cut_where_the_plan_cuts")
    suite_tests=(tests/test_step.py -k "auto_captures")
    tiny_epochs=(--samples 1024 --warmup 0 --epochs 1)  # two batches of 512, one epoch
    tiny_accuracy=(--max-epochs 1)
    tiny_prepare=(--copies 1 --repeats 1)
    tiny_startup=(--rounds 1 model.fc1=32 --epochs 1)
else
    device=cuda
    parity_tests=(tests/test_step.py)
    # all: test_step.py already ran as the parity step; suite alone runs everything.
    suite_tests=()
    [ "$what" = all ] && suite_tests=(--ignore tests/test_step.py)
    tiny_epochs=() tiny_accuracy=() tiny_prepare=() tiny_startup=()
fi
wants() { [ "$what" = all ] || [ "$what" = "$1" ]; }
failed=()

# summarize: summary.txt from the logs so far (after each step: a run cut short still leaves one).
summarize() {
    {
        echo "# gpu_check.sh $what${dry:+ (dry run)}: the measurements"
        # Each step's title and exit, the result tables and ratio lines, the single-number results and
        # pytest's last line.
        cat "$out"/parity.txt "$out"/bench.txt "$out"/startup.txt "$out"/suite.txt 2>/dev/null | grep -E \
            '^(### |# exit |\| |[a-z-]+ / [a-z-]+ = |time to |[0-9]+% test accuracy not|first preparation|cached start|outside training / floor|[0-9]+ (passed|failed|skipped|errors?)|no tests ran)'
        echo "failed steps: ${failed[*]:-none}"
    } > "$out/summary.txt"
}

# run_step LOG TITLE COMMAND...: append COMMAND's output to LOG (and stdout) under "### TITLE".
run_step() {
    local log=$1 title=$2
    shift 2
    local started=$SECONDS
    echo "### $title" | tee -a "$log"
    "$@" 2>&1 | tee -a "$log"
    local code=${PIPESTATUS[0]}
    echo "# exit $code after $((SECONDS - started)) s" | tee -a "$log"
    [ "$code" -eq 0 ] || failed+=("$title (exit $code)")
    summarize
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi: not found"
    "$python" -c "import sys, torch, accelerate; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| cuda', torch.version.cuda, '| gpus', torch.cuda.device_count(), '| accelerate', accelerate.__version__)"
    [ -n "$dry" ] && echo "dry run: on the CPU with tiny settings; nothing is installed"
    missing=()
    for wheel in "$wheels"/*.whl; do
        [ -e "$wheel" ] || continue
        # A wheel's file name starts with its distribution's name, - written _; importlib.metadata
        # normalizes both spellings.
        name=$(basename "$wheel" | cut -d- -f1)
        "$python" -c "import importlib.metadata, sys; importlib.metadata.version(sys.argv[1])" "$name" 2>/dev/null \
            || missing+=("$wheel")
    done
    echo "carried wheels to install: ${missing[*]:-none}"
    [ -d "$wheels" ] || echo "no $wheels/ here: fetch it with 'bash benchmarks/gpu_check.sh wheels' and carry it"
    # zoo itself and the example plugins the tests train and list, editable, built by the setuptools
    # already here (a plugin that is not installed fails its test module's collection).
    install=(-m pip install -q --no-index --no-deps)
    if [ -n "$dry" ]; then
        [ ${#missing[@]} -eq 0 ] || echo "dry run, not run: $python ${install[*]} ${missing[*]}"
        echo "dry run, not run: $python ${install[*]} --no-build-isolation -e . -e examples/zoo-cnn -e examples/zoo-timm"
    else
        [ ${#missing[@]} -eq 0 ] || "$python" "${install[@]}" "${missing[@]}"
        "$python" "${install[@]}" --no-build-isolation -e . -e examples/zoo-cnn -e examples/zoo-timm
    fi
    "$python" - <<'PY'
import importlib
import importlib.util

# Imported, not only found: a carried wheel that needs a newer pyarrow (say) fails here, first.
failing = []
for name in ("datasets", "pydantic", "yaml", "safetensors", "numpy", "PIL", "matplotlib", "tqdm", "timm", "zoo",
             "zoo_cnn", "zoo_timm"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # any failure to import is the finding
        failing.append(f"{name} ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})")
print(f"needed: cannot import {', '.join(failing) or 'nothing'}")
optional = ["wandb", "optuna", "tensorboard", "mlflow", "onnx", "onnxruntime", "dockerfile", "pytest_timeout"]
print(f"optional (their tests skip): missing {', '.join(n for n in optional if importlib.util.find_spec(n) is None) or 'nothing'}")
PY
} 2>&1 | tee "$out/setup.txt"

# A module that fails to import must not stop the others' tests: its error is in the log and the status.
pytest=("$python" -m pytest -q -rs --durations=25 -p no:cacheprovider --continue-on-collection-errors)
if wants parity; then
    run_step "$out/parity.txt" "pytest ${parity_tests[*]}" "${pytest[@]}" "${parity_tests[@]}"
fi
if wants bench; then
    # batch 512 and 16 side by side with the captured step (the zoo-graph row); then trainer.compile=auto
    # (the default) at batch 512, alone and with a cosine schedule and clipping captured; time to 96% test
    # accuracy on the bundled sample; the decode timing; the start-up breakdown for 1 and 15 epochs.
    bench=("$python" benchmarks/epoch_speed.py --device "$device")
    run_step "$out/bench.txt" "epoch_speed.py --batch-size 512 --compile graph" \
        "${bench[@]}" --batch-size 512 --compile graph "${tiny_epochs[@]}"
    run_step "$out/bench.txt" "epoch_speed.py --batch-size 16 --epochs 2 --compile graph" \
        "${bench[@]}" --batch-size 16 --epochs 2 --compile graph "${tiny_epochs[@]}"
    run_step "$out/bench.txt" "epoch_speed.py --batch-size 512 --pipelines minimal --compile auto" \
        "${bench[@]}" --batch-size 512 --pipelines minimal --compile auto "${tiny_epochs[@]}"
    run_step "$out/bench.txt" "epoch_speed.py --batch-size 512 --pipelines minimal --compile auto --schedule cosine --grad-clip 1.0" \
        "${bench[@]}" --batch-size 512 --pipelines minimal --compile auto --schedule cosine --grad-clip 1.0 \
        "${tiny_epochs[@]}"
    run_step "$out/bench.txt" "epoch_speed.py --time-to-accuracy" "${bench[@]}" --time-to-accuracy "${tiny_accuracy[@]}"
    run_step "$out/bench.txt" "prepare_speed.py" "$python" benchmarks/prepare_speed.py --device "$device" \
        "${tiny_prepare[@]}"
    run_step "$out/startup.txt" "startup.py --rounds 3" "$python" benchmarks/startup.py --rounds 3 "${tiny_startup[@]}"
    # Dry, this would be the command above again (--epochs 1 either way): 20 s of the suite for nothing.
    [ -n "$dry" ] || run_step "$out/startup.txt" "startup.py --rounds 3 --epochs 15" \
        "$python" benchmarks/startup.py --rounds 3 --epochs 15
fi
if wants suite; then
    run_step "$out/suite.txt" "pytest ${suite_tests[*]:-(the whole suite)}" \
        "${pytest[@]}" --junitxml "$out/suite.xml" "${suite_tests[@]}"
fi

echo
cat "$out/summary.txt"
[ ${#failed[@]} -eq 0 ]
