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

set -m  # job control: the training gets a process group of its own, so one kill reaches all of it
# ACCELERATE_ARGS is split on spaces on purpose: it holds several flags.
# shellcheck disable=SC2086
accelerate launch ${ACCELERATE_ARGS:-} -m zoo.train "$@" &
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
