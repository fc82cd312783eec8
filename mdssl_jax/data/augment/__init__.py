"""SimCLR/BYOL augmentations in TensorFlow, vectorised and stateless.

Synopsis::

  params = dict(crop_area=(0.08, 1.0), aspect=(3 / 4, 4 / 3), flip_p=0.5,
                jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.2,
                hue=0.1, brightness_mode="multiplicative", gray_p=0.2,
                blur_p=1.0, blur_sigma=(0.1, 2.0), blur_kernel_frac=0.1,
                solarize_p=0.0, mean=(0.485, 0.456, 0.406),
                std=(0.229, 0.224, 0.225))
  u = tf.random.stateless_uniform([B, augment.NUM_UNIFORMS], seed)
  views = augment.augment_batch(images_uint8, u, out_size=32, **params)

The operations follow METHODS.md §1.4 with torchvision semantics: random
resized crop (area fraction, log-uniform aspect ratio, 10 attempts then a
central fallback) resampled with the antialiased Keys bicubic kernel of
``tf.image.resize(..., "bicubic", antialias=True)``; horizontal flip; colour
jitter (brightness, contrast, saturation, hue in a random order; brightness
multiplicative, x·f with f ~ U[max(0, 1 − a), 1 + a] as torchvision, or
additive, x + δ with δ ~ U[−a, a] as TF's ``random_brightness`` and
deepmind BYOL, chosen by ``brightness_mode``); grayscale
y = 0.2989 r + 0.5870 g + 0.1140 b; Gaussian blur (odd kernel ≈ 10% of the
side, symmetric padding); solarize x ↦ x if x < 0.5 else 1 − x; then
((x / 255) − mean) / std.

Randomness. Every view consumes one vector of ``NUM_UNIFORMS`` uniforms in
[0, 1); each op reads its own fixed slots (``slots.py``), so the ops are
independent and same uniforms ⇒ bit-identical view. The training pipeline
draws all vectors of a step in one stateless call.

Images of varying size (decoded JPEGs of streamed datasets) are split in
two: ``random_resized_crop`` crops one image of any size inside a tf.data
map (same window rule, uniform slots and resampling), and
``augment_cropped_batch`` applies the remaining ops to a batch of crops;
together they match ``augment_batch`` to float rounding.

``saliency_mask_batch`` implements RELICv2's background replacement
(METHODS.md §3.7) on the uint8 source images, before the crop and colour
ops.

Modules: ``slots`` (uniform slots), ``ops`` (colour, grey, blur, checks),
``crop`` (random resized crop), ``batch`` (whole views, eval transform),
``saliency``.
"""

# pylint: disable=unused-import
from mdssl_jax.data.augment.batch import augment_batch
from mdssl_jax.data.augment.batch import augment_cropped_batch
from mdssl_jax.data.augment.batch import eval_transform
from mdssl_jax.data.augment.crop import random_resized_crop
from mdssl_jax.data.augment.ops import blur_kernel_size
from mdssl_jax.data.augment.ops import gaussian_blur
from mdssl_jax.data.augment.ops import solarize
from mdssl_jax.data.augment.ops import to_grayscale
from mdssl_jax.data.augment.saliency import saliency_mask_batch
from mdssl_jax.data.augment.slots import NUM_SALIENCY_UNIFORMS
from mdssl_jax.data.augment.slots import NUM_UNIFORMS
