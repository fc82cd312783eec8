#!/usr/bin/env bash
# Run on a single multi-GPU host (all local GPUs form the `data` mesh axis).
#
#   launch/run_gpu.sh --config=configs/mdssl_cifar_mix.py --workdir=runs/mdssl
#
# Installs the CUDA build of JAX into .venv-gpu the first time.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
if [[ ! -d .venv-gpu ]]; then
  python3 -m venv .venv-gpu
  .venv-gpu/bin/pip install -q -e . "jax[cuda12]"
fi
exec .venv-gpu/bin/python -m mdssl_jax.main "$@"
