#!/usr/bin/env bash
# Run an mdssl_jax command on every worker of a Cloud TPU VM pod slice.
#
#   launch/run_tpu.sh NAME ZONE mdssl_jax.main \
#       --config=configs/mdssl_cifar_mix.py --workdir=gs://BUCKET/runs/mdssl \
#       --config.data.data_dir=gs://BUCKET/tfds
#
# Shorthand for `launch/tpu_pod.sh launch --name=NAME --zone=ZONE MODULE ...`:
# copies this checkout to each worker, installs it with jax[tpu] into a venv,
# and starts `python -m <module> <args> --distributed` on all workers at once
# (jax.distributed.initialize() discovers the pod topology by itself).
# `launch/run_tpu.sh --dry-run NAME ...` prints the commands instead.
set -euo pipefail
dry_run=()
if [[ ${1:-} == --dry-run ]]; then
  dry_run=(--dry-run)
  shift
fi
if [[ $# -lt 3 ]]; then
  echo "usage: $0 [--dry-run] TPU_NAME ZONE MODULE [ARGS...]" >&2
  exit 2
fi
name=$1 zone=$2
shift 2
exec "$(dirname "${BASH_SOURCE[0]}")/tpu_pod.sh" launch --name="$name" \
  --zone="$zone" ${dry_run[@]+"${dry_run[@]}"} -- "$@"
