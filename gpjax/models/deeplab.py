"""DeepLabv3 (Chen et al. 2017) on a dilated ResNet: the segmentation model of the paper's attack.

Layout of torchvision / VainF's DeepLabV3Plus-Pytorch ``deeplabv3_resnet50`` at
output stride 16, so the authors' released Cityscapes checkpoint imports one to
one (`gpjax.interop.torch_import`):

  backbone: ResNet-50, torchvision stem (7x7/2 conv + 3x3/2 max-pool), stage 4
    with stride replaced by dilation 2 -> stage4 map (N, H/16, W/16, 2048);
  [channel mask]: stage4 * mask (C,), the paper's attack (zero chosen channels);
  ASPP: 1x1 conv; three 3x3 convs with dilation 6, 12, 18; image pooling (GAP ->
    1x1 conv -> broadcast); each conv + BN + ReLU, 256 channels; concatenated ->
    1x1 conv + BN + ReLU -> dropout 0.1 (training only);
  3x3 conv + BN + ReLU -> 1x1 classifier (with bias) -> bilinear upsampling to
    the input size (half-pixel centres, as PyTorch's align_corners=False).

``width`` and ``aspp_features`` shrink the network for tests (64 and 256 at the
paper's size). The backbone's border treatment is ``padding``; the head's is
``head_padding`` (zero in the official code). The official training sets the
backbone's BatchNorm momentum to 0.01 (PyTorch terms, ``backbone_bn_momentum``
0.99 here) and leaves the head's at PyTorch's default 0.1 (0.9 here).
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpjax.models.layers import ConvBN
from gpjax.models.padding import PaddedConv, check_padding
from gpjax.models.resnet import ResNet18, ResNet34, ResNet50

BACKBONES = {'resnet18': ResNet18, 'resnet34': ResNet34, 'resnet50': ResNet50}
ASPP_RATES = (6, 12, 18)  # Output stride 16 (torchvision, VainF); stride 8 would double them.


class ASPP(nn.Module):
  """Atrous spatial pyramid pooling: five branches, concatenated and projected.

  Attributes:
    features: channels of every branch and of the output (256 in the paper).
    rates: dilations of the three 3x3 branches.
    padding: border treatment of the dilated convs.
    dropout: dropout rate after the projection (training only).
    bn_axis_name: mesh axis for BatchNorm statistics in training.
    dtype: compute dtype.
  """
  features: int = 256
  rates: Sequence[int] = ASPP_RATES
  padding: str = 'zero'
  dropout: float = 0.1
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps x (N, h, w, C) to (N, h, w, features)."""
    conv = functools.partial(ConvBN, padding=self.padding, bn_axis_name=self.bn_axis_name,
                             dtype=self.dtype)
    branches = [conv(self.features, 1, name='conv1x1')(x, train=train)]
    for i, rate in enumerate(self.rates):
      branches.append(conv(self.features, 3, dilation=rate, name=f'atrous{i + 1}')(x, train=train))
    pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
    pooled = conv(self.features, 1, name='pooling')(pooled, train=train)
    # Bilinear upsampling of a 1x1 map is a broadcast.
    branches.append(jnp.broadcast_to(pooled, branches[0].shape))
    y = conv(self.features, 1, name='project')(jnp.concatenate(branches, -1), train=train)
    return nn.Dropout(self.dropout, deterministic=not train)(y)


class DeepLabV3(nn.Module):
  """DeepLabv3 returning ``(logits, features)``.

  Attributes:
    num_classes: classes of the per-pixel logits (Cityscapes 19, VOC 21).
    backbone: 'resnet50' (the paper's), or 'resnet18'/'resnet34' for quick runs.
    width: channels of the backbone's stem and first stage (64 in the paper).
    aspp_features: channels of the ASPP branches and the 3x3 conv (256).
    padding: the backbone's border treatment (see ``padding.PADDINGS``).
    head_padding: the head's border treatment ('zero' as the official code).
    dropout: rate of the ASPP dropout in training.
    backbone_bn_momentum: decay of the backbone's BatchNorm running statistics,
      Flax convention (``m x running + (1 - m) x batch``): the official 0.01 of
      PyTorch is 0.99 here. The head's BatchNorm keeps 0.9 (PyTorch's 0.1).
    bn_axis_name: mesh axis for BatchNorm statistics in training.
    dtype: compute dtype; parameters stay float32, logits are float32.
  """
  num_classes: int
  backbone: str = 'resnet50'
  width: int = 64
  aspp_features: int = 256
  padding: str = 'zero'
  head_padding: str = 'zero'
  dropout: float = 0.1
  backbone_bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  def make_backbone(self, detached: bool = False) -> nn.Module:
    """The dilated backbone (output stride 16), or (``detached``) a parentless copy."""
    if self.backbone not in BACKBONES:
      raise ValueError(f'backbone={self.backbone!r} is not supported; choose one of '
                       f'{tuple(BACKBONES)}.')
    check_padding(self.padding)
    kwargs = dict(width=self.width, padding=self.padding, stem='imagenet', dilate_last=True,
                  bn_momentum=self.backbone_bn_momentum, bn_axis_name=self.bn_axis_name,
                  dtype=self.dtype)
    if detached:
      return BACKBONES[self.backbone](**kwargs, parent=None)
    return BACKBONES[self.backbone](**kwargs, name='backbone')

  @property
  def feature_channels(self) -> int:
    """C, the channels of the backbone's last map (2048 for ResNet-50 at width 64)."""
    return self.make_backbone(detached=True).stage_channels[-1]

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, channel_mask: jax.Array | None = None,
               from_features: bool = False,
               output_size: tuple[int, int] | None = None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Segments images.

    Args:
      x: normalised images (N, H, W, 3); or, with ``from_features``, the
        backbone's last map (N, h, w, C), so that many channel masks can reuse
        one backbone pass.
      train: batch statistics in BatchNorm (updating running ones) and dropout
        (needs a 'dropout' rng).
      channel_mask: optional (C,) multiplied into the backbone's last map before
        the head: 0 removes a channel (the attack), 1 keeps it.
      from_features: x is the backbone's last map, not images.
      output_size: (H, W) of the logits; the size of x by default (needed with
        ``from_features``).

    Returns:
      logits (N, H, W, num_classes) float32, and features: the backbone's maps
      ``stem``, ``stage1``..``stage4`` (unmasked; only ``stage4`` with
      ``from_features``), ``pooled`` (N, C), the GAP of stage4, as float32.
    """
    check_padding(self.head_padding)
    if self.num_classes < 1:
      raise ValueError(f'num_classes={self.num_classes!r} must be >= 1.')
    if from_features:
      if output_size is None:
        raise ValueError('from_features=True needs output_size=(H, W) of the logits.')
      if x.shape[-1] != self.feature_channels:
        raise ValueError(f'from_features: x has {x.shape[-1]} channels; the backbone gives '
                         f'{self.feature_channels}.')
      # The backbone's variables stay unused: apply() accepts the full variables.
      feats = {'stage4': x.astype(self.dtype)}
    else:
      feats = self.make_backbone()(x, train=train)
      output_size = output_size or x.shape[1:3]
    top = feats['stage4']
    feats['pooled'] = jnp.mean(top.astype(jnp.float32), axis=(1, 2))
    if channel_mask is not None:
      if channel_mask.shape != (top.shape[-1],):
        raise ValueError(f'channel_mask has shape {channel_mask.shape}; expected '
                         f'({top.shape[-1]},), one factor per channel of the last map.')
      top = top * channel_mask.astype(top.dtype)
    conv = functools.partial(ConvBN, padding=self.head_padding, bn_axis_name=self.bn_axis_name,
                             dtype=self.dtype)
    y = ASPP(self.aspp_features, padding=self.head_padding, dropout=self.dropout,
             bn_axis_name=self.bn_axis_name, dtype=self.dtype, name='aspp')(top, train=train)
    y = conv(self.aspp_features, 3, name='head_conv')(y, train=train)
    y = PaddedConv(self.num_classes, 1, use_bias=True, dtype=self.dtype,
                   kernel_init=nn.initializers.lecun_normal(), name='classifier')(y)
    n = y.shape[0]
    logits = jax.image.resize(y.astype(jnp.float32), (n, *output_size, self.num_classes),
                              method='bilinear')
    return logits, feats
