"""Backbone + head: GAPNet, PermuteNet and a plain GAP + Dense classifier.

- ``gapnet``: 3x3 conv (C -> k, with bias) then global average pooling; the
  pooled k-vector is the logits (no Dense layer).
- ``permutenet``: GAP -> channel ordering -> Dense. Training draws a fresh
  ordering at every step (see ``random_ordering``), as the official code does.
- ``linear``: GAP -> Dense.

Any head accepts an ordering of the input of stage 1..4 (``permute_layer``);
heads with a Dense accept one of the pooled vector too (layer 5).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gpjax.models.init import check_init, kernel_and_bias
from gpjax.models.padding import PaddedConv, check_padding
from gpjax.models.resnet import ResNet18, ResNet34, ResNet50
from gpjax.models.vgg import VGG11, VGG13, VGG16, VGG19

BACKBONES = {
    'resnet18': ResNet18, 'resnet34': ResNet34, 'resnet50': ResNet50,
    'vgg11': VGG11, 'vgg13': VGG13, 'vgg16': VGG16, 'vgg19': VGG19,
}
HEADS = ('gapnet', 'permutenet', 'linear')
PERMUTE_LAYERS = (1, 2, 3, 4, 5)


def _choice(name: str, value: Any, allowed) -> Any:
  if value not in allowed:
    raise ValueError(f'{name}={value!r} is not supported; choose one of {tuple(allowed)}.')
  return value


def check_ordering(ordering: Any, num_channels: int, name: str = 'ordering') -> None:
  """Raises ValueError unless ``ordering`` is a permutation of range(num_channels).

  The length is checked always; the values only when they are concrete (not
  inside ``jit``/``vmap``), where checking would need a host round trip.
  """
  shape = tuple(np.shape(ordering))
  if shape != (num_channels,):
    raise ValueError(f'{name} has shape {shape}; expected ({num_channels},), one index per channel.')
  if isinstance(ordering, jax.core.Tracer):
    return
  values = np.asarray(ordering)
  if not np.issubdtype(values.dtype, np.integer) or not np.array_equal(
      np.sort(values), np.arange(num_channels)):
    raise ValueError(f'{name} is not a permutation of 0..{num_channels - 1}: '
                     f'{np.array2string(values, threshold=12)}.')


def random_ordering(rng: jax.Array, num_channels: int) -> jax.Array:
  """A uniformly random channel ordering (num_channels,) int32."""
  return jax.random.permutation(rng, num_channels).astype(jnp.int32)


class Classifier(nn.Module):
  """A CNN classifier returning ``(logits, features)``.

  Attributes:
    num_classes: k, the number of logits.
    backbone: a key of ``BACKBONES``.
    head: one of ``HEADS``.
    padding: border treatment of every padded conv, the GAPNet head included.
    width: channels of the first stage (64 in the paper).
    stem: ResNet stem, 'official' (no max-pool) or 'imagenet'.
    permute_layer: where an ordering applies: input of stage 1..4, or 5 for
      the pooled vector.
    bn_axis_name: mesh axis for BatchNorm statistics in training.
    dtype: compute dtype ('float32' or 'bfloat16'); parameters stay float32.
    param_init: parameter initialisation: 'flax' (He-normal convs, LeCun-normal heads, zero
      biases) or 'pytorch' (PyTorch 1.x defaults, as the official models; `gpjax.models.init`).
  """
  num_classes: int
  backbone: str = 'resnet18'
  head: str = 'gapnet'
  padding: str = 'zero'
  width: int = 64
  stem: str = 'official'
  permute_layer: int = 5
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32
  param_init: str = 'flax'

  def make_backbone(self, detached: bool = False) -> nn.Module:
    """The backbone submodule, or (``detached``) a parentless copy to query."""
    _choice('backbone', self.backbone, BACKBONES)
    check_padding(self.padding)
    kwargs = dict(width=self.width, padding=self.padding, bn_axis_name=self.bn_axis_name,
                  dtype=self.dtype, param_init=check_init(self.param_init))
    if self.backbone.startswith('resnet'):
      kwargs['stem'] = self.stem
    if detached:
      return BACKBONES[self.backbone](**kwargs, parent=None)
    return BACKBONES[self.backbone](**kwargs, name='backbone')

  def ordering_length(self) -> int:
    """Channels at ``permute_layer``: the length an ordering must have."""
    channels = self.make_backbone(detached=True).stage_channels
    return channels[self.permute_layer - 1] if self.permute_layer < 5 else channels[4]

  def check(self) -> None:
    """Validates the attributes; raises ValueError naming the bad one."""
    self.make_backbone(detached=True)
    _choice('head', self.head, HEADS)
    _choice('permute_layer', self.permute_layer, PERMUTE_LAYERS)
    if self.num_classes < 1:
      raise ValueError(f'num_classes={self.num_classes!r} must be >= 1.')
    if self.width < 1:
      raise ValueError(f'width={self.width!r} must be >= 1.')

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, ordering: jax.Array | None = None,
               start_layer: int = 0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Classifies images.

    Args:
      x: normalised images (N, H, W, 3), or the input of stage ``start_layer``.
      train: use batch statistics in BatchNorm (and update running ones).
      ordering: optional channel ordering (C,) int applied at ``permute_layer``.
      start_layer: 0 for images; l in 1..4 when x is the input of stage l.

    Returns:
      logits (N, num_classes) float32, and features: the backbone's named maps,
      ``pooled`` (N, C) (GAP of stage4) and, for GAPNet, ``class_map``
      (N, h, w, k), the per-location logits before pooling.
    """
    self.check()
    if ordering is not None:
      if self.permute_layer == 5 and self.head == 'gapnet':
        raise ValueError("permute_layer=5 needs a head with a Dense layer ('permutenet' or "
                         "'linear'): GAPNet's pooled vector is its logits.")
      check_ordering(ordering, self.ordering_length())
    layer = self.permute_layer if self.permute_layer < 5 else 0
    feats = self.make_backbone()(x, train=train, ordering=ordering, permute_layer=layer,
                                 start_layer=start_layer)
    top = feats['stage4']
    feats['pooled'] = jnp.mean(top.astype(jnp.float32), axis=(1, 2))
    if self.head == 'gapnet':
      class_map = PaddedConv(self.num_classes, 3, padding=self.padding, use_bias=True,
                             dtype=self.dtype, kernel_init=nn.initializers.lecun_normal(),
                             param_init=self.param_init, name='head')(top)
      feats['class_map'] = class_map
      return jnp.mean(class_map.astype(jnp.float32), axis=(1, 2)), feats
    pooled = feats['pooled']
    if ordering is not None and self.permute_layer == 5:
      pooled = pooled[..., ordering]
    kernel_init, bias_init = kernel_and_bias(self.param_init, pooled.shape[-1],
                                             nn.initializers.lecun_normal())
    logits = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=kernel_init,
                      bias_init=bias_init, name='head')(pooled)
    return logits.astype(jnp.float32), feats
