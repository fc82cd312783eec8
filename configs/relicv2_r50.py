r"""RELICv2, ResNet-50, ImageNet-1k, 1000 epochs (seed 004; METHODS.md §3).

  python -m mdssl_jax.main --config=configs/relicv2_r50.py
  python -m mdssl_jax.main --config=configs/relicv2_r50.py:r200x2 \
      --workdir=runs/relicv2_r200x2
  python -m mdssl_jax.main --config=configs/relicv2_r50.py \
      --config.data.data_dir=/data/tfds
  python -m mdssl_jax.main --config=configs/relicv2_r50.py:demo  # offline CPU
  python -m mdssl_jax.main --config=configs/relicv2_r50.py:demo,tiny  # 1-2 min
  python -m mdssl_jax.main --config=configs/relicv2_r50.py:shared \
      --workdir=/tmp/relicv2_shared

Without --workdir a fresh runs/relicv2_r50[_<arg>]/<timestamp> is created and
printed; rerunning with that --workdir resumes from its newest checkpoint.

Data: TFDS `imagenet2012` (train split for pretraining, validation split for
the end-of-run kNN / linear-probe check), read from `config.data.data_dir`:
--config.data.data_dir=..., else $TFDS_DATA_DIR, else
~/tensorflow_datasets. Nothing downloads. If the set is not prepared there,
the run stops at start-up with the command to prepare it (`tfds build
imagenet2012 --data_dir=<dir>`; ImageNet is a manual download, so place
ILSVRC2012_img_{train,val}.tar in <dir>/downloads/manual first). The train
split is streamed (`in_memory=False`): records are decoded on the fly and
views are cropped from the full-resolution images; only the capped
evaluation subsets are held in memory.

Method, as the paper states it (unstated values are METHODS.md §3.5's
[assumed] choices):
  * views: L = 4 large views at 224 px (crop area [0.08, 1]) and S = 2 small
    views at 96 px (crop area [0.05, 0.14]); large views 1, 3 and small view 1
    use the "odd" augmentation column (blur 0.1, solarize 0.2), large views
    2, 4 and small view 2 the "even" one (blur 1.0, solarize 0); flip 0.5,
    colour jitter 0.8 (0.4/0.4/0.2/0.1, random order), grayscale 0.2.
    Brightness is additive, x + δ with δ ~ U[−0.4, 0.4] (App. B.1: adjusted
    "uniformly by a value in [−a, a]", the BYOL augmentations), not
    torchvision's factor.
    Large and small views are encoded in separate forward passes inside the
    one jitted step; small views never enter the target network.
  * saliency masking of large views with p_m = 0.1 when masks exist
    (coverage ≥ 5%, uniform grey background per image; METHODS.md §3.7).
    TFDS imagenet2012 carries no masks: without `masks=` the stage is off
    and the log says so. Precompute them once (unsupervised: handcrafted
    maps fused and refined by a small network, App. B.2.1; see
    configs/saliency/default.py), then train with them:
      python -m mdssl_jax.saliency --config=configs/saliency/default.py \
          --workdir=/data/masks/in1k --config.data.data_dir=/data/tfds
      python -m mdssl_jax.main --config=configs/relicv2_r50.py:masks=\
/data/masks/in1k/tfds_masks --config.data.data_dir=/data/tfds
    `masks=DIR` sets the domain's masks_path (a sidecar joined to the images
    by tfds_id; a missing or mismatched one fails at start-up). A TFDS build
    that stores masks as an image feature takes
    `tfds_name=<builder>,mask_key=<feature>` instead.
  * ResNet-50 (ImageNet stem); projector 2048→4096→256 and predictor
    256→4096→256 with BN + ReLU (BYOL sizes); EMA target of encoder +
    projector, γ cosine from 0.996 to 1, applied after every optimiser step.
  * loss: τ = 0.2, β = 1 (invariance scale), n_e = 10 negatives per anchor,
    contrast scale 1; the KL uses the reverse pair for large→large pairs and
    the transposed logits for small→large pairs (METHODS.md §3.3).
  * optimiser: LARS (η = 1e-3, momentum 0.9), base lr 0.3 × 4096/256 = 4.8
    peak, weight decay 1.5e-6; biases and norm parameters get neither decay
    nor trust ratio. Batch 4096, 10 warm-up epochs, cosine to 0 over 1000
    epochs (≈ 312.8k steps).

Hardware / runtime: an accelerator pod (the paper used TPUs; e.g. a TPU
v4-64 slice or 64 A100s; days for 1000 epochs, not measured here); see
launch/run_tpu.sh. Train in bfloat16 (parameters and losses stay float32).
Expected result: 77.1% top-1 (93.3% top-5) under the paper's linear
evaluation protocol (frozen encoder, 100 epochs SGD-Nesterov on all of
ImageNet, METHODS.md §3.9). The end-of-run evaluation printed here (kNN and
a short linear probe on a 10k/5k-image subset) is a health check, not that
protocol.

Variants (config arguments, comma-separated):
  r50x2, r50x4, r101, r152, r200, r200x2: other encoders from the paper
    (Table 5 top-1: 79.0, 79.4, 78.7, 79.3, 79.8, 80.6); combinable with
    `epochs=...`, `tfds_name=...`, `mask_key=...`, `masks=...`.
  demo: the offline CPU demo (below); `demo,tiny` is a smoke run,
    `demo,steps=N` changes the run length.
  shared: the real .npz domains of ../shared/data sized for a CPU (below);
    takes `steps=`, `width=`, `per_domain_batch=`, `domains=` and
    `shared_dir=`. Arguments of another setup are rejected.

:demo — 4 large + 2 small views, EMA target, saliency masks, offline.
Data: the three built-in domains (scikit-learn digits, crops of scikit-image
photos, procedurally generated textures) at 32×32; nothing is downloaded.
The textures domain ships saliency masks, so the RELICv2 masking stage runs
offline: each large view of a textures image is independently replaced, with
probability p_m = 0.1, by its foreground on a uniform grey background
(METHODS.md §3.7); digits and photos carry no masks and are never masked
(the log says which domains are masked).
Method: L = 4 large views at 32 px and S = 2 small views at 16 px (odd/even
augmentation columns with the paper's additive brightness, crop areas
[0.2, 1] and [0.05, 0.14]); online
ResNet-18 (width ⅛, CIFAR stem) + projector + predictor (256→64), EMA target
of encoder + projector (γ cosine 0.99 → 1); τ = 0.2, β = 1, n_e = 10
negatives out of the 48-image batch (16 per domain). LARS with peak lr 2.0
(taken as the peak: linear batch scaling would give a uselessly small lr at
batch 48), wd 1e-5, 20 warm-up steps, cosine over 300 steps.
Hardware / runtime: 2 CPU cores, about 3–6 minutes on a quiet machine
(measured 2026-12-01 on a 2-vCPU Intel AVX-512 host: 197 s of training at
~1.75 steps/s, plus compile and ~6 s evaluation).
Expected result (measured, seed 0, per-view BN, additive brightness,
reference-order LARS): the loss falls from ≈ 2.5 (first 25 steps) to
≈ 1.95, and per-domain kNN top-1 (chance 10% / 14% / 14%) ends at ≈ 81%
digits, 94% photos, 37% textures (mean 70%; linear probe 89% / 96% / 40%,
mean 75%). For reference, the same encoder at random initialisation scores
kNN 84% / 73% / 36% (mean 64%): in 300 CPU steps training mainly helps the
photos domain. It is a demo of the mechanics, not a benchmark. `demo,tiny`
(width 1/16, 60 steps, ≈ 100 s of CPU time) is a smoke run.

:shared — RELICv2 on the real .npz domains of ../shared/data, on a CPU.
  python -m mdssl_jax.main --config=configs/relicv2_r50.py:shared,\
domains=cifar10+tinyimagenet,steps=3000
  python -m mdssl_jax.main \
      --config=configs/relicv2_r50.py:shared,shared_dir=/data/shared
Data: by default cifar10, mnist (grey 28×28, padded to 32 and
channel-repeated), gtsrb and notmnist from ../shared/data (beside the
repository; `shared_dir=` points elsewhere, and a missing directory fails at
start-up). Every step draws 32 images from each domain (global batch 128).
`domains=` picks any '+'-separated subset of cifar10, mnist, gtsrb,
tinyimagenet, notmnist. These sets carry no saliency masks, so the masking
stage is off (the log says so).
Method: as :demo (32 px, ResNet-18 width ⅛, heads 256→64 with BN), 100
warm-up steps and cosine over 1,500 steps.
Hardware / runtime: 2 CPU cores, roughly 1–1.5 hours on a quiet machine
(measured ≈ 2.5 s of CPU time per step, plus ~40 s compile); a single GPU
takes minutes. Use `width=0.25` on a GPU for a stronger encoder.
Expected: per-domain kNN and linear-probe top-1 well above chance (10% / 10%
/ 2.3% / 10%), written to <workdir>/results.json. The full run has not been
measured on this machine yet; the offline demo with the same recipe gains
~8 points of mean kNN over a random-init encoder in 300 steps.
"""

import os

from mdssl_jax import config_lib
from mdssl_jax import presets

# Variant name → (ResNet depth, width multiplier).
ARCHS = {
    "r50": (50, 1.0),
    "r50x2": (50, 2.0),
    "r50x4": (50, 4.0),
    "r101": (101, 1.0),
    "r152": (152, 1.0),
    "r200": (200, 1.0),
    "r200x2": (200, 2.0),
}
# The encoder flags (r50 is the default).
_ENCODERS = tuple(name for name in ARCHS if name != "r50")
# Config arguments that select a setup; tests load and validate each.
VARIANTS = ("", *_ENCODERS, "demo", "demo,tiny", "shared")
# Domains of ../shared/data that `:shared` can pick with `domains=`.
SHARED_AVAILABLE = ("cifar10", "mnist", "gtsrb", "tinyimagenet", "notmnist")
# The config arguments each setup reads; the others must keep their defaults.
_SETUP_ARGS = {
    "imagenet": ("epochs", "tfds_name", "mask_key", "masks", *_ENCODERS),
    "demo": ("demo", "tiny", "steps"),
    "shared": ("shared", "steps", "width", "per_domain_batch", "domains",
               "shared_dir"),
}


def default_data_dir() -> str:
  """$TFDS_DATA_DIR, else TFDS's own default ~/tensorflow_datasets."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
      os.path.join("~", "tensorflow_datasets"))


def get_config(arg=None):
  """RELICv2 config; see the module docstring for the variants."""
  defaults = dict(
      demo=False, shared=False, tiny=False, steps=-1, width=0.125,
      per_domain_batch=32, domains="+".join(presets.SHARED_DOMAINS),
      shared_dir=presets.DEFAULT_SHARED_DIR, epochs=1000.0,
      tfds_name="imagenet2012", mask_key=None, masks=None,
      **{name: False for name in _ENCODERS})
  arg = config_lib.parse_arg(arg, **defaults)
  setup = "demo" if arg.demo else "shared" if arg.shared else "imagenet"
  stray = sorted(key for key, value in defaults.items()
                 if arg[key] != value and key not in _SETUP_ARGS[setup])
  if stray:
    raise config_lib.ConfigError(
        f"relicv2_r50: the {setup} setup does not take {stray}; it takes "
        f"{sorted(_SETUP_ARGS[setup])}.")
  if arg.demo:
    return _demo_config(arg)
  if arg.shared:
    return _shared_config(arg)
  chosen = [name for name in _ENCODERS if arg[name]]
  if len(chosen) > 1:
    raise config_lib.ConfigError(
        f"Pick at most one encoder variant, got {chosen}.")
  depth, width = ARCHS[chosen[0] if chosen else "r50"]

  c = config_lib.get_default_config("relicv2")
  domain = {"name": "imagenet", "source": "tfds", "tfds_name": arg.tfds_name,
            "split": "train", "eval_split": "validation",
            # 1.28M images at 224 px do not fit in host memory: stream.
            "in_memory": False}
  if arg.mask_key:
    domain["mask_key"] = arg.mask_key
  if arg.masks:  # A sidecar of `python -m mdssl_jax.saliency`.
    domain["masks_path"] = arg.masks
  c.data.domains = [domain]
  c.data.data_dir = default_data_dir()
  c.data.download = False
  c.data.image_size = 224
  c.data.resize = "resize"
  c.data.per_domain_batch = 4096  # One domain: the global batch.
  c.data.mean = (0.485, 0.456, 0.406)
  c.data.std = (0.229, 0.224, 0.225)

  c.views.large.count = 4
  c.views.large.size = 224
  c.views.large.crop_area = (0.08, 1.0)
  c.views.small.count = 2
  c.views.small.size = 96
  c.views.small.crop_area = (0.05, 0.14)
  c.augment.aspect = (3 / 4, 4 / 3)
  # Odd/even columns of the paper's Table 4 (METHODS.md §3.6).
  c.augment.odd = dict(flip_p=0.5, jitter_p=0.8, brightness=0.4,
                       contrast=0.4, saturation=0.2, hue=0.1, gray_p=0.2,
                       blur_p=0.1, blur_sigma=(0.1, 2.0),
                       blur_kernel_frac=0.1, solarize_p=0.2,
                       brightness_mode="additive")
  c.augment.even = dict(c.augment.odd.to_dict(), blur_p=1.0, solarize_p=0.0)
  c.saliency.prob = 0.1
  c.saliency.min_coverage = 0.05

  c.model.depth = depth
  c.model.width_multiplier = width
  c.model.stem = "imagenet"
  c.model.norm = "batch"
  c.projector.hidden_dims = (4096,)
  c.projector.out_dim = 256
  c.projector.norm = "batch"
  c.predictor.hidden_dims = (4096,)
  c.predictor.out_dim = 256
  c.predictor.norm = "batch"
  c.compute_dtype = "bfloat16"

  c.method_args.temperature = 0.2
  c.method_args.beta = 1.0
  c.method_args.num_negatives = 10
  c.method_args.kl_mode_large = "reverse"
  c.method_args.kl_mode_small = "transpose"
  c.method_args.contrast_scale = 1.0

  c.optim.name = "lars"
  c.optim.base_lr = 0.3  # × global batch / 256 in code.
  c.optim.lr_scaling = "linear"
  c.optim.weight_decay = 1.5e-6
  c.optim.momentum = 0.9
  c.optim.trust_coefficient = 1e-3
  c.optim.warmup_steps = -1
  c.optim.warmup_epochs = 10.0
  c.optim.end_lr_factor = 0.0
  c.ema.base = 0.996
  c.ema.schedule = "cosine"
  c.total_steps = -1
  c.total_epochs = arg.epochs

  c.mesh_shape = -1
  c.log_every = 100
  c.checkpoint.every_steps = 5000
  c.checkpoint.keep = 3
  c.evals.knn.k = 20
  c.eval.max_train_per_domain = 10_000
  c.eval.max_test_per_domain = 5_000
  c.eval.feature_batch_size = 256
  return c


def _small_views(c) -> None:
  """L = 4 large views at 32 px, S = 2 small ones at 16 px (§3.6)."""
  # Large views 1, 3 and small view 1 use augment.odd, large 2, 4 and small
  # 2 use augment.even (the schema's defaults are the paper's table: blur
  # 0.1 / 1.0, solarize 0.2 / 0; brightness additive as in App. B.1).
  presets.brightness_mode(c, "additive")
  c.views.large.count = 4
  c.views.large.size = 32
  c.views.large.crop_area = (0.2, 1.0)  # 0.08 is harsh on 32 px images.
  c.views.small.count = 2
  c.views.small.size = 16
  c.views.small.crop_area = (0.05, 0.14)


def _demo_config(arg):
  """`:demo`: the built-in domains (textures carry masks), width ⅛, CPU."""
  c = config_lib.get_default_config("relicv2")
  presets.demo_data(c, image_size=32, per_domain_batch=16)
  _small_views(c)
  c.saliency.prob = 0.1
  c.saliency.min_coverage = 0.05

  _cpu_recipe(c, width=0.125, warmup_steps=20)
  c.total_steps = 300
  c.log_every = 25
  c.checkpoint.every_steps = 100
  c.checkpoint.keep = 2
  presets.cpu_eval(c, probe_steps=1500, max_train=2000, max_test=1000)

  if arg.tiny:
    c.model.width_multiplier = 0.0625
    c.total_steps = 60
    c.optim.warmup_steps = 5
    c.log_every = 10
    c.checkpoint.every_steps = 30
    presets.cpu_eval(c, probe_steps=300, max_train=500, max_test=300)
  if arg.steps > 0:
    c.total_steps = arg.steps
  return c


def _cpu_recipe(c, *, width: float, warmup_steps: int) -> None:
  """Model, loss and optimiser of the CPU-sized setups (:demo, :shared)."""
  presets.cpu_model(c, width=width, proj_hidden=256, proj_out=64)
  c.method_args.update(temperature=0.2, beta=1.0, num_negatives=10)
  c.optim.update(name="lars", lr_scaling="none", base_lr=2.0,
                 weight_decay=1e-5, warmup_steps=warmup_steps)
  # A short run needs a faster-moving target than ImageNet's 0.996.
  c.ema.update(base=0.99, schedule="cosine")


def _shared_config(arg):
  """`:shared`: the ../shared/data .npz domains, sized for a CPU."""
  domains = [d for d in arg.domains.split("+") if d]
  unknown = sorted(set(domains) - set(SHARED_AVAILABLE))
  if unknown or not domains:
    raise config_lib.ConfigError(
        f"relicv2_r50:shared: unknown domains {unknown}; pick a "
        f"'+'-separated subset of {list(SHARED_AVAILABLE)}.")
  c = config_lib.get_default_config("relicv2")
  presets.shared_data(c, domains, shared_dir=arg.shared_dir, image_size=32,
                      per_domain_batch=arg.per_domain_batch)
  _small_views(c)
  c.saliency.prob = 0.1  # Used only by domains that carry masks.

  _cpu_recipe(c, width=arg.width, warmup_steps=100)
  c.total_steps = arg.steps if arg.steps > 0 else 1500
  c.log_every = 50
  c.checkpoint.every_steps = 500
  c.checkpoint.keep = 2
  presets.cpu_eval(c, probe_steps=3000, max_train=8000, max_test=2000)
  return c
