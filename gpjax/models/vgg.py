"""VGG backbones with BatchNorm and a border treatment on every conv.

VGG's five conv groups (each closed by a 2x2 max-pool) are named ``stem`` and
``stage1``..``stage4`` so that probes address ResNet and VGG the same way.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpjax.models.layers import ConvBN
from gpjax.models.padding import check_padding
from gpjax.models.resnet import STAGE_NAMES

# Convs per group; group g has 64 * 2**min(g, 3) channels at width 64.
VGG_GROUPS = {
    'vgg11': (1, 1, 2, 2, 2),
    'vgg13': (2, 2, 2, 2, 2),
    'vgg16': (2, 2, 3, 3, 3),
    'vgg19': (2, 2, 4, 4, 4),
}


class VGG(nn.Module):
  """VGG-BN backbone.

  Attributes:
    groups: convs per group (five groups).
    width: channels of the first group (64 in the paper); later groups use
      width * (2, 4, 8, 8).
    padding: border treatment of every conv.
    bn_axis_name: mesh axis to average BatchNorm statistics over in training.
    dtype: compute dtype; parameters stay float32.
    param_init: parameter initialisation, 'flax' or 'pytorch' (`gpjax.models.init`).
  """
  groups: Sequence[int]
  width: int = 64
  padding: str = 'zero'
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32
  param_init: str = 'flax'

  @property
  def stage_channels(self) -> tuple[int, ...]:
    """Channels of the stem, stage1..stage4 outputs."""
    return tuple(self.width * 2**min(g, 3) for g in range(5))

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, ordering: jax.Array | None = None,
               permute_layer: int = 0, start_layer: int = 0) -> dict[str, jax.Array]:
    """Same contract as ``ResNet.__call__``: (N, H, W, C) -> named feature maps."""
    check_padding(self.padding)
    if start_layer == 0 and min(x.shape[1:3]) < 32:
      raise ValueError(f'VGG needs inputs of at least 32x32 (five 2x2 max-pools); got '
                       f'{x.shape[1]}x{x.shape[2]}.')
    feats = {}
    x = x.astype(self.dtype)
    for g, (name, convs) in enumerate(zip(STAGE_NAMES, self.groups)):
      if g < start_layer:
        continue
      if g > 0 and permute_layer == g and ordering is not None:
        x = x[..., ordering]
      for j in range(convs):
        x = ConvBN(self.stage_channels[g], 3, padding=self.padding,
                   bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                   param_init=self.param_init,
                   name=f'{name}_conv{j + 1}')(x, train=train)
      x = nn.max_pool(x, (2, 2), (2, 2))
      feats[name] = x
    return feats


VGG11 = functools.partial(VGG, groups=VGG_GROUPS['vgg11'])
VGG13 = functools.partial(VGG, groups=VGG_GROUPS['vgg13'])
VGG16 = functools.partial(VGG, groups=VGG_GROUPS['vgg16'])
VGG19 = functools.partial(VGG, groups=VGG_GROUPS['vgg19'])
