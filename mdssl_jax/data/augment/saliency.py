"""RELICv2 saliency masking: grey out the background (METHODS.md §3.7)."""

from __future__ import annotations

import tensorflow as tf

from mdssl_jax.data.augment import ops


def saliency_mask_batch(images_uint8: tf.Tensor, masks: tf.Tensor,
                        uniforms: tf.Tensor, *, prob: float | tf.Tensor,
                        min_coverage: float = 0.05) -> tf.Tensor:
  """Background replacement on uint8 source images, before crop and colour.

  With probability ``prob``, and only if the binarised mask (> 0.5) covers
  at least ``min_coverage`` of the image, an image becomes
  m ⊙ x + (1 − m) ⊙ g with one grey level g ~ U[0, 1] (×255, rounded) for
  the whole image; otherwise it is returned unchanged.

  Args:
    images_uint8: [B, H, W, 3] uint8.
    masks: [B, H, W] masks (float in [0, 1], bool, uint8 0/1 or 0/255).
    uniforms: [B, 2] in [0, 1): (apply decision, grey level).
    prob: scalar or [B] masking probability (0 for images without masks).
    min_coverage: minimum binarised foreground fraction for masking.

  Returns:
    [B, H, W, 3] uint8.
  """
  if isinstance(prob, (int, float)):
    ops.check_prob("saliency prob", prob)
  images = tf.convert_to_tensor(images_uint8)
  u = tf.convert_to_tensor(uniforms, tf.float32)
  masks = tf.convert_to_tensor(masks)
  if masks.dtype == tf.uint8:
    # 0/255 masks as well as 0/1 ones binarise at half their scale.
    masks = tf.cast(masks, tf.float32) / tf.maximum(
        1.0, tf.cast(tf.reduce_max(masks, axis=(1, 2), keepdims=True),
                     tf.float32))
  fg = tf.cast(masks, tf.float32) > 0.5
  coverage = tf.reduce_mean(tf.cast(fg, tf.float32), axis=(1, 2))
  apply = (u[:, 0] < prob) & (coverage >= min_coverage)
  grey = tf.cast(tf.round(u[:, 1] * 255.0), tf.uint8)
  masked = tf.where(fg[..., None], images, ops.bcast(grey, 4))
  return ops.select_rows(apply, masked, images)
