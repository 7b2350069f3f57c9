#!/bin/bash
# The images' entrypoint: docker run IMAGE [RECIPE] [section.key=value ...], where RECIPE is a
# shipped recipe's name (`zoo recipes` lists them) or a YAML file mounted into the container.
# Flags for `accelerate launch` itself come from ACCELERATE_ARGS (as in scripts/train.sh), e.g.
#   docker run -e ACCELERATE_ARGS="--num_processes 1" ...
# Without it accelerate uses every GPU the container sees (none on CPU: one process).
#
# It runs as the container's first process, which the kernel shields from signals it has no
# handler for: `docker stop` (SIGTERM) would reach nobody and the run would be killed ten seconds
# later without a checkpoint. So this script stays, passes SIGTERM, SIGUSR1 and SIGINT on to every
# process of the training (the launcher and each rank, as Slurm does) and waits until all of them
# are gone: each rank checkpoints and exits, even after the launcher itself has ended.
set -u
# enroot and Apptainer may hand the host's PATH to the container: find the image's venv regardless.
PATH="${VIRTUAL_ENV:-/opt/venv}/bin:$PATH"
export PATH

interrupted=0
forward() {
    interrupted=1
    kill -s "$1" -- "-$job" 2>/dev/null || true
}

# With no flags and no accelerate config (the image has none: its cache folder is a volume, and a
# config written at build time would not know the host's GPUs), accelerate picks these values itself
# but opens every run with a block of warnings saying so. Pass what it would pick: one process per
# visible GPU (one on a CPU), on one machine, full precision; the recipe sets zoo's own precision.
defaults=()
accelerate_config="${HF_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/huggingface}/accelerate/default_config.yaml"
if [ -z "${ACCELERATE_ARGS:-}" ] && [ ! -f "$accelerate_config" ]; then
    if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
        gpus=$(printf '%s' "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .)
    else
        gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
    fi
    processes=$(( gpus > 1 ? gpus : 1 ))
    defaults=(--num_processes "$processes" --num_machines 1 --mixed_precision no --dynamo_backend no)
    [ "$processes" -gt 1 ] && defaults=(--multi_gpu "${defaults[@]}")
fi

set -m  # job control: the training gets a process group of its own, so one kill reaches all of it
# ACCELERATE_ARGS is split on spaces on purpose: it holds several flags.
# shellcheck disable=SC2086
accelerate launch "${defaults[@]}" ${ACCELERATE_ARGS:-} -m zoo.train "$@" &
job=$!
for sig in TERM USR1 INT; do
    # shellcheck disable=SC2064
    trap "forward $sig" "$sig"
done

# `wait` returns early when a signal arrives; wait again until the launcher has really exited.
# 127 from a later wait means its status was already collected by the one before.
status=127
while :; do
    interrupted=0
    wait "$job"
    code=$?
    [ "$code" -eq 127 ] || status=$code
    [ "$interrupted" -eq 1 ] || break
done
# The ranks may still be saving when the launcher is gone: let the whole group finish.
for _ in $(seq 600); do kill -0 -- "-$job" 2>/dev/null || break; sleep 0.2; done
exit "$status"
