"""Pure loss functions: arrays in, ``(loss, metrics)`` out."""

from mdssl_jax.losses.common import l2_normalize, masked_logsumexp
from mdssl_jax.losses.contrastive import mdssl_loss, nt_xent
