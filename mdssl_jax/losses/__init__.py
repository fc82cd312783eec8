"""Pure loss functions: arrays in, ``(loss, metrics)`` out.

One module per family: contrastive (NT-Xent, MDSSL), relic (RELICv2),
distillation (BYOL, MoCo v3, DINO), swav, redundancy (VICReg, Barlow Twins),
msbreg; monitor holds the collapse diagnostics.
"""

from mdssl_jax.losses.common import l2_normalize, masked_logsumexp
from mdssl_jax.losses.contrastive import mdssl_loss, nt_xent
from mdssl_jax.losses.distillation import (byol_loss, dino_center_update,
                                           dino_loss, mocov3_loss,
                                           teacher_temperature)
from mdssl_jax.losses.monitor import collapse_monitor, is_collapsed
from mdssl_jax.losses.msbreg import msbreg_loss
from mdssl_jax.losses.redundancy import barlow_twins_loss, vicreg_loss
from mdssl_jax.losses.relic import (relic_loss, relic_multiview_loss,
                                    sample_negatives)
from mdssl_jax.losses.swav import sinkhorn, swav_loss
