r"""RELICv2, ResNet-50, ImageNet-1k, 1000 epochs (seed 004; METHODS.md §3).

  python -m mdssl_jax.main --config=configs/relicv2_r50.py
  python -m mdssl_jax.main --config=configs/relicv2_r50.py:r200x2 \
      --workdir=runs/relicv2_r200x2
  python -m mdssl_jax.main --config=configs/relicv2_r50.py \
      --config.data.data_dir=/data/tfds
  python -m mdssl_jax.main --config=configs/relicv2_r50.py:demo  # offline CPU

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
    Large and small views are encoded in separate forward passes inside the
    one jitted step; small views never enter the target network.
  * saliency masking of large views with p_m = 0.1 when masks exist
    (coverage ≥ 5%, uniform grey background per image; METHODS.md §3.7).
    TFDS imagenet2012 carries no masks, so the stage is off and the log says
    so; with a TFDS build that stores them as an image feature aligned with
    each example, pass `tfds_name=<builder>,mask_key=<feature>`.
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

Variants (config argument, combinable with `epochs=...`, `tfds_name=...`,
`mask_key=...`):
  r50x2, r50x4, r101, r152, r200, r200x2: other encoders from the paper
    (Table 5 top-1: 79.0, 79.4, 78.7, 79.3, 79.8, 80.6);
  demo: the offline CPU demo, identical to configs/relicv2_demo.py.
"""

import os

from mdssl_jax import config_lib

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


def default_data_dir() -> str:
  """$TFDS_DATA_DIR, else TFDS's own default ~/tensorflow_datasets."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
      os.path.join("~", "tensorflow_datasets"))


def get_config(arg=None):
  flags = {name: False for name in ARCHS if name != "r50"}
  arg = config_lib.parse_arg(arg, demo=False, epochs=1000.0,
                             tfds_name="imagenet2012", mask_key=None, **flags)
  if arg.demo:
    return config_lib.load_sibling(__file__, "relicv2_demo").get_config()
  chosen = [name for name in flags if arg[name]]
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
                       blur_kernel_frac=0.1, solarize_p=0.2)
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
  c.eval.knn_k = 20
  c.eval.max_train_per_domain = 10_000
  c.eval.max_test_per_domain = 5_000
  c.eval.feature_batch_size = 256
  return c
