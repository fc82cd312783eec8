r"""MDSSL on the real .npz domains of ../shared/data, sized for a CPU.

  python -m mdssl_jax.main --config=configs/shared_mix.py \
      --workdir=/tmp/shared_mix
  python -m mdssl_jax.main --config=configs/shared_mix.py:simclr \
      --workdir=/tmp/shared_simclr
  python -m mdssl_jax.main \
      --config=configs/shared_mix.py:shared_dir=/data/shared --workdir=...

Domains: cifar10, mnist (grey 28×28, padded to 32 and channel-repeated), gtsrb,
notmnist — four visually different domains of 8–10k training images each.
Model: ResNet-18 at width 0.25 (CIFAR stem), projector 256→64, τ = 0.2,
λ1 = 1, λ2 = 0.1, 64 images per domain per step, 2,000 steps; multiplicative
(torchvision) brightness, as MDSSL's PyTorch code (paper A.5).

Hardware / runtime: 2 CPU cores, roughly 1–1.5 hours (use a GPU for more
steps or full width). Expected: per-domain kNN and probe top-1 far above
chance (10% / 10% / 2.3% / 10%); `:simclr` gives the union-SimCLR baseline for
comparison. Set the data path with the `shared_dir=` config argument if
../shared is not beside the repo (an absent directory fails at start-up).
"""

from mdssl_jax import config_lib
from mdssl_jax import presets

# Config arguments that select a setup; tests load and validate each.
VARIANTS = ("", "simclr")


def get_config(arg=None):
  """MDSSL (or `:simclr`) on the ../shared/data domains, sized for a CPU."""
  arg = config_lib.parse_arg(arg, simclr=False, steps=2000,
                             shared_dir=presets.DEFAULT_SHARED_DIR)
  c = config_lib.get_default_config("simclr" if arg.simclr else "mdssl")
  presets.shared_data(c, shared_dir=arg.shared_dir)
  c.views.large.crop_area = (0.2, 1.0)
  c.model.depth = 18
  c.model.width_multiplier = 0.25
  c.model.stem = "cifar"
  c.projector.hidden_dims = (256,)
  c.projector.out_dim = 64
  c.method_args.temperature = 0.2
  if not arg.simclr:
    c.method_args.lambda1 = 1.0
    c.method_args.lambda2 = 0.1
  c.optim.base_lr = 1.0
  c.optim.weight_decay = 1e-5
  c.optim.warmup_steps = 100
  c.total_steps = arg.steps
  c.log_every = 50
  c.checkpoint.every_steps = 500
  c.evals.probe.steps = 3000
  c.eval.max_train_per_domain = 8000
  c.eval.max_test_per_domain = 2000
  return c
