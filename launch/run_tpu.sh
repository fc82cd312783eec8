#!/usr/bin/env bash
# Run an mdssl_jax command on every worker of a Cloud TPU VM pod slice.
#
#   launch/run_tpu.sh NAME ZONE mdssl_jax.main --config=configs/mdssl_cifar_mix.py \
#       --workdir=gs://BUCKET/runs/mdssl --config.data.data_dir=gs://BUCKET/tfds
#
# Copies this checkout to each worker, installs it with jax[tpu] into a venv,
# and starts `python -m <module> <args> --distributed` on all workers at once
# (jax.distributed.initialize() discovers the pod topology by itself).
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 TPU_NAME ZONE MODULE [ARGS...]" >&2
  exit 2
fi
name=$1; zone=$2; shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
gcloud compute tpus tpu-vm scp --recurse --zone="$zone" --worker=all \
  "$repo" "$name":~/mdssl_jax
gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command="
  set -e
  cd ~/mdssl_jax
  python3 -m venv ~/venv && . ~/venv/bin/activate
  pip install -q -U pip
  pip install -q -e . 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  python -m $* --distributed
"
