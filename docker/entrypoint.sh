#!/bin/sh
# The images' entrypoint: docker run IMAGE [RECIPE] [section.key=value ...]
# Flags for `accelerate launch` itself come from ACCELERATE_ARGS (as in scripts/train.sh), e.g.
#   docker run -e ACCELERATE_ARGS="--num_processes 1" ...
# Without it accelerate uses every GPU the container sees (none on CPU: one process).
set -eu
# enroot and Apptainer may hand the host's PATH to the container: find the image's venv regardless.
PATH="${VIRTUAL_ENV:-/opt/venv}/bin:$PATH"
export PATH
# ACCELERATE_ARGS is split on spaces on purpose: it holds several flags.
# shellcheck disable=SC2086
exec accelerate launch ${ACCELERATE_ARGS:-} "${ZOO_HOME:-/app}/launch/train.py" "$@"
