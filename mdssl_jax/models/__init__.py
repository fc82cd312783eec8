"""Encoders (ResNet and ViT families), heads (MLP, SwAV prototypes, DINO
head) and the SSL network the methods train (`network`: SSLNetwork and its
builders).

The `resnet(depth, ...)` and `vit(size, ...)` factories are deliberately not
re-exported here so that `mdssl_jax.models.resnet` and `mdssl_jax.models.vit`
stay the submodules; use `from mdssl_jax.models.vit import vit` or
`models.resnet.resnet(50)`.
"""

from mdssl_jax.models.heads import DINOHead
from mdssl_jax.models.heads import MLP
from mdssl_jax.models.heads import normalize_prototypes
from mdssl_jax.models.heads import Prototypes
from mdssl_jax.models.heads import WeightNormDense
from mdssl_jax.models.network import build_encoder
from mdssl_jax.models.network import build_mlp
from mdssl_jax.models.network import SSLNetwork
from mdssl_jax.models.resnet import BasicBlock
from mdssl_jax.models.resnet import BottleneckBlock
from mdssl_jax.models.resnet import feature_dim
from mdssl_jax.models.resnet import RESNET_DEPTHS
from mdssl_jax.models.resnet import ResNet
from mdssl_jax.models.resnet import resnet_by_name
from mdssl_jax.models.resnet import resnet_tiny
from mdssl_jax.models.vit import VIT_SIZES
from mdssl_jax.models.vit import ViT
