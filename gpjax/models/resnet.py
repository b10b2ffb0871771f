"""ResNet-18/34/50 backbones with a border treatment on every padded conv.

The default stem is the official one of the paper's code (7x7 stride-2 conv,
BN, ReLU, no max-pool); ``stem='imagenet'`` adds the 3x3 stride-2 max-pool.
The backbone returns a dict of named feature maps so that probes can read or
re-enter any stage.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpjax.models.layers import ConvBN
from gpjax.models.padding import check_padding

STEMS = ('official', 'imagenet')
STAGE_NAMES = ('stem', 'stage1', 'stage2', 'stage3', 'stage4')


class BasicBlock(nn.Module):
  """Two 3x3 convs with an identity or 1x1-projection shortcut."""
  features: int
  strides: int = 1
  dilation: int = 1
  conv: Any = ConvBN

  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = self.conv(self.features, 3, self.strides, dilation=self.dilation, name='conv1')(x, train=train)
    y = self.conv(self.features, 3, dilation=self.dilation, relu=False, name='conv2')(y, train=train)
    return nn.relu(y + _shortcut(self, x, train))


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided, as torchvision v1.5), 1x1 expand by 4."""
  features: int
  strides: int = 1
  dilation: int = 1
  conv: Any = ConvBN

  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = self.conv(self.features, 1, name='conv1')(x, train=train)
    y = self.conv(self.features, 3, self.strides, dilation=self.dilation, name='conv2')(y, train=train)
    y = self.conv(self.features * 4, 1, relu=False, name='conv3')(y, train=train)
    return nn.relu(y + _shortcut(self, x, train))


def _shortcut(block: nn.Module, x: jax.Array, train: bool) -> jax.Array:
  out = block.features * block.expansion
  if block.strides == 1 and x.shape[-1] == out:
    return x
  return block.conv(out, 1, block.strides, relu=False, name='shortcut')(x, train=train)


class ResNet(nn.Module):
  """ResNet backbone: stem and four stages.

  Attributes:
    stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    block: BasicBlock or Bottleneck.
    width: channels of the stem and first stage (64 in the paper); stages
      use width * (1, 2, 4, 8), so tests build tiny networks of the same shape.
    padding: border treatment of every padded conv (see ``padding.PADDINGS``).
    stem: 'official' (no max-pool) or 'imagenet' (3x3 stride-2 max-pool).
    dilate_last: replace the stride of stage 4 by dilation 2 (output stride 16).
    bn_axis_name: mesh axis to average BatchNorm statistics over in training.
    dtype: compute dtype; parameters stay float32.
    param_init: parameter initialisation, 'flax' or 'pytorch' (`gpjax.models.init`).
    bn_momentum: decay of every BatchNorm's running statistics, Flax convention
      (0.9 = PyTorch's default momentum 0.1).
  """
  stage_sizes: Sequence[int]
  block: Any = BasicBlock
  width: int = 64
  padding: str = 'zero'
  stem: str = 'official'
  dilate_last: bool = False
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32
  param_init: str = 'flax'
  bn_momentum: float = 0.9

  @property
  def stage_channels(self) -> tuple[int, ...]:
    """Channels of stem, stage1..stage4 outputs."""
    e = self.block.expansion
    return (self.width,) + tuple(self.width * 2**i * e for i in range(4))

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, ordering: jax.Array | None = None,
               permute_layer: int = 0, start_layer: int = 0) -> dict[str, jax.Array]:
    """Runs the backbone.

    Args:
      x: images (N, H, W, 3), or the input of stage ``start_layer`` when > 0.
      train: batch statistics (True) or running averages (False) in BatchNorm.
      ordering: channel ordering (C,) applied to the input of stage
        ``permute_layer`` (1..4): ``x[..., ordering]``.
      permute_layer: stage whose input is permuted; 0 for none.
      start_layer: 0 to start from images, l in 1..4 to start at stage l.

    Returns:
      Feature maps ``{'stem', 'stage1', ..., 'stage4'}`` (N, h, w, C) from the
      first one computed on.
    """
    check_padding(self.padding)
    if self.stem not in STEMS:
      raise ValueError(f'stem={self.stem!r} is not supported; choose one of {STEMS}.')
    conv = functools.partial(ConvBN, padding=self.padding, bn_axis_name=self.bn_axis_name,
                             dtype=self.dtype, param_init=self.param_init,
                             bn_momentum=self.bn_momentum)
    feats = {}
    x = x.astype(self.dtype)
    if start_layer == 0:
      x = conv(self.width, 7, 2, name='stem')(x, train=train)
      if self.stem == 'imagenet':
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
      feats['stem'] = x
    for i, blocks in enumerate(self.stage_sizes, start=1):
      if i < start_layer:
        continue
      if permute_layer == i and ordering is not None:
        x = x[..., ordering]
      dilated = self.dilate_last and i == 4
      for j in range(blocks):
        strides = 1 if i == 1 or j > 0 or dilated else 2
        # As torchvision: the first dilated block keeps dilation 1.
        dilation = 2 if dilated and j > 0 else 1
        x = self.block(self.width * 2**(i - 1), strides, dilation, conv,
                       name=f'stage{i}_block{j + 1}')(x, train=train)
      feats[f'stage{i}'] = x
    return feats


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck)
