r"""MDSSL without domain labels: k-means pseudo-domains (seed 000 §4).

  python -m mdssl_jax.main --config=configs/mdssl_pseudo.py \
      --workdir=runs/pseudo_svhn --config.data.data_dir=$TFDS_DATA_DIR
  python -m mdssl_jax.main --config=configs/mdssl_pseudo.py:pair=stl10 ...
  python -m mdssl_jax.main --config=configs/mdssl_pseudo.py:shared \
      --workdir=/tmp/pseudo_mnist
  python -m mdssl_jax.main \
      --config=configs/mdssl_pseudo.py:shared,pair=tinyimagenet ...
  python -m mdssl_jax.main --config=configs/mdssl_pseudo.py:demo \
      --workdir=/tmp/pseudo_demo

The configured domains are pooled into one unlabelled mixture; MDSSL warms
up as plain SimCLR on mixed batches, then re-clusters the ℓ2-normalised
projections of the whole training set into M = 2 (demo: 3) pseudo-domains
and trains on N images per pseudo-domain per step (METHODS §2.8). The
domain names are used only to score the clusters (purity, ARI in
<workdir>/clustering.jsonl, clustering_confusion.png) and to evaluate.
`labels=kmeans` turns the robust filter off (the paper's "clustering");
`embedding=features` clusters backbone features instead of projections.

Default (seed 000 §4.1): CIFAR-10 + SVHN via TFDS (visually dissimilar);
`pair=stl10`: CIFAR-10 + STL-10 (visually similar). The Table-1 setup
otherwise (configs/mdssl_cifar_mix.py: ResNet-50, LARS lr 4, τ = 0.1,
λ1 = 1, λ2 = 0.1, 1024 images per (pseudo-)domain per step, 48,000
iterations); warm-up 480 iterations, re-clustering every 2,400 (rounds at
480, 2,880, …, 46,080), ε0 = 1 decaying to 1e-3. Prepare the data with
`tfds build cifar10 svhn_cropped stl10 --data_dir=$TFDS_DATA_DIR`; score
unseen CIFAR-100 with `python -m mdssl_jax.evaluate
--config=configs/eval/unseen.py:tfds=cifar100 --workdir=RUN`.
Hardware / runtime: as Table 1 (an accelerator pod, about a day). Expected
(paper Fig. 5, bars without a table): with robust clustering MDSSL beats
multi-domain SimCLR on CIFAR-10, SVHN and unseen CIFAR-100, and
clustering alone already separates CIFAR-10 from SVHN well.

`shared`: the real .npz sets of ../shared/data at CPU size — CIFAR-10 +
MNIST (dissimilar), `pair=tinyimagenet` for CIFAR-10 + Tiny-ImageNet
(similar); width-¼ ResNet-18, 64 per pseudo-domain, 2,000 steps, warm-up
200, re-clustering every 400 (`steps=` scales all three). 2 CPU cores:
about an hour.

`demo`: the three built-in offline domains (digits, photos, textures;
nothing downloaded, no ../shared), M = 3, the demo's model and schedule
(300 steps, warm-up 60, re-clustering every 60). 2 CPU cores: ~2.5 min.
"""

from mdssl_jax import config_lib
from mdssl_jax import presets

# Config arguments that select a setup; tests load and validate each.
VARIANTS = ("", "pair=stl10", "labels=kmeans", "shared",
            "shared,pair=tinyimagenet", "shared,embedding=features", "demo",
            "runlocal")

_TFDS_PAIRS = {
    "svhn": {"name": "svhn", "source": "tfds", "tfds_name": "svhn_cropped"},
    "stl10": {"name": "stl10", "source": "tfds", "tfds_name": "stl10"},
}
_SHARED_PAIRS = ("mnist", "tinyimagenet")


def get_config(arg=None):
  """MDSSL with pseudo-domains; see the module docstring for variants."""
  arg = config_lib.parse_arg(
      arg, pair="", labels="robust_kmeans", shared=False, demo=False,
      runlocal=False, steps=2000, embedding="projection",
      shared_dir=presets.DEFAULT_SHARED_DIR)
  c = config_lib.get_default_config("mdssl")
  c.data.domain_labels = arg.labels
  c.pseudo_domains.embedding = arg.embedding
  c.method_args.lambda1 = 1.0
  c.method_args.lambda2 = 0.1
  if arg.demo:
    return _demo(c)
  if arg.shared:
    return _shared(c, arg.pair or "mnist", arg.shared_dir, arg.steps)
  pair = arg.pair or "svhn"
  if pair not in _TFDS_PAIRS:
    raise config_lib.ConfigError(
        f"pair={pair!r}; the seed-000 mixtures are CIFAR-10 + "
        f"{sorted(_TFDS_PAIRS)} (with `shared`: {list(_SHARED_PAIRS)}).")
  presets.cifar_mix(c, runlocal=arg.runlocal)
  c.data.domains = [dict(presets.CIFAR_MIX_DOMAINS[0]),
                    dict(_TFDS_PAIRS[pair])]
  c.pseudo_domains.update(warmup_steps=480, every_steps=2400)
  if arg.runlocal:
    c.pseudo_domains.update(warmup_steps=4, every_steps=3)
  return c


def _shared(c, pair, shared_dir, steps):
  if pair not in _SHARED_PAIRS:
    raise config_lib.ConfigError(
        f"pair={pair!r}; with `shared` use one of {list(_SHARED_PAIRS)}.")
  presets.shared_data(c, ("cifar10", pair), shared_dir=shared_dir)
  presets.cpu_model(c)
  c.views.large.crop_area = (0.2, 1.0)
  c.method_args.temperature = 0.2
  c.optim.update(base_lr=1.0, weight_decay=1e-5, warmup_steps=steps // 20)
  c.total_steps = steps
  c.pseudo_domains.update(warmup_steps=steps // 10, every_steps=steps // 5)
  c.log_every = 50
  c.checkpoint.every_steps = 500
  presets.cpu_eval(c, probe_steps=3000, max_train=8000, max_test=2000)
  return c


def _demo(c):
  presets.demo_data(c)
  presets.cpu_model(c, width=0.125)
  c.views.large.crop_area = (0.2, 1.0)
  c.method_args.temperature = 0.2
  c.optim.update(name="lars", base_lr=1.0, weight_decay=1e-5,
                 warmup_steps=20)
  c.total_steps = 300
  c.pseudo_domains.update(warmup_steps=60, every_steps=60)
  c.log_every = 25
  c.checkpoint.update(every_steps=100, keep=2)
  presets.cpu_eval(c)
  return c
