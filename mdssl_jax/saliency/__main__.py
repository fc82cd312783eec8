r"""Precompute unsupervised saliency masks for a dataset (RELICv2 masking).

  python -m mdssl_jax.saliency --config=configs/saliency/synthetic.py \
      --workdir=/tmp/saliency_synthetic           # CPU benchmark + report
  python -m mdssl_jax.saliency \
      --config=configs/saliency/default.py:npz,path=/data/cifar10 \
      --workdir=/tmp/cifar10_masks                # -> DIR/masks.npz
  python -m mdssl_jax.saliency --config=configs/saliency/default.py \
      --workdir=/data/imagenet_masks              # TFDS -> DIR/tfds_masks

Rerunning with the same --workdir resumes: cached pseudo-labels, the last
finished refinement round and every finished chunk of masks are kept. The
last line names the file or directory to give the training domain as
``masks_path``.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from mdssl_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Saliency config, e.g. configs/saliency/synthetic.py.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output directory (checkpoints, chunks, masks).",
    required=True)


def _print(line: str) -> None:
  print(line, flush=True)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. "
                         "--config=configs/saliency/synthetic.py")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  cli.quiet_library_logs()
  cli.hide_gpus_from_tf()
  # pylint: disable=g-import-not-at-top
  from mdssl_jax import checkpoint
  from mdssl_jax.saliency import config as config_lib
  from mdssl_jax.saliency import precompute
  # pylint: enable=g-import-not-at-top
  try:
    config_lib.validate(_CONFIG.value)
    out = precompute.run(_CONFIG.value, _WORKDIR.value, log=_print)
  except (ValueError, checkpoint.CheckpointError) as e:
    sys.exit(cli.error_line(e))
  _print(f"masks_path={out['masks_path']}")


if __name__ == "__main__":
  app.run(main)
