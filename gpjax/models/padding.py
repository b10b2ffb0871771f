"""Convolution with the six border treatments studied in the paper.

Every pad is explicit and symmetric, like PyTorch's ``padding=k // 2``: Flax's
``'SAME'`` pads only after the input for stride 2 on even sizes, and in a study
of border effects that asymmetry is itself a position cue.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gpjax.models.init import kernel_and_bias

PADDINGS = ('zero', 'circular', 'reflect', 'replicate', 'partial', 'none')

# jnp.pad modes of the paddings that are a pad followed by a VALID convolution.
_PAD_MODES = {'circular': 'wrap', 'reflect': 'reflect', 'replicate': 'edge'}


def check_padding(padding: str) -> str:
  if padding not in PADDINGS:
    raise ValueError(f'padding={padding!r} is not supported; choose one of {PADDINGS}.')
  return padding


def resize_growth(kernel_size: int) -> int:
  """Pixels added to each spatial size by ``padding='none'`` (official code).

  The official code resizes a conv's input by its padding ``(k - 1) // 2``,
  except that a padding of 1 grows the input by 2: 3x3 convs keep the size of
  zero padding, the 7x7 stem (+3) gives an output one pixel smaller.
  """
  pad = (kernel_size - 1) // 2
  return 2 if pad == 1 else pad


def _valid_count(size: int, kernel: int, stride: int, pad: int, dilation: int) -> np.ndarray:
  """Number of in-image taps of each output position along one axis."""
  ones = np.pad(np.ones(size), pad)
  span = dilation * (kernel - 1) + 1
  out = (size + 2 * pad - span) // stride + 1
  return np.array([ones[i * stride:i * stride + span:dilation].sum() for i in range(out)])


def partial_conv_scale(height: int, width: int, kernel: int, stride: int = 1,
                       pad: int | None = None, dilation: int = 1) -> np.ndarray:
  """Partial-convolution rescaling (Liu et al. 2018), shape (H_out, W_out, 1).

  ``window size / in-image taps``: a box mask is separable, so the 2D count is
  the outer product of the two 1D counts (a constant folded at trace time).
  """
  pad = dilation * (kernel // 2) if pad is None else pad
  count = np.outer(_valid_count(height, kernel, stride, pad, dilation),
                   _valid_count(width, kernel, stride, pad, dilation))
  return (kernel * kernel / count)[..., None].astype(np.float32)


class PaddedConv(nn.Module):
  """A square conv whose border treatment is one of ``PADDINGS``.

  Attributes:
    features: output channels.
    kernel_size: square kernel size k; the pad is k // 2 (1x1 convs get none).
    strides: square stride.
    padding: one of ``PADDINGS``.
    dilation: square dilation (the pad grows with it, as in PyTorch).
    use_bias: add a bias.
    dtype: compute dtype; parameters stay float32.
    param_init: 'flax' (``kernel_init``, zero bias) or 'pytorch' (PyTorch's defaults, see
      `gpjax.models.init`).
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: str = 'zero'
  dilation: int = 1
  use_bias: bool = False
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
  param_init: str = 'flax'

  def _inits(self, x: jax.Array):
    """(kernel, bias) initialisers for input x: fan_in = in_channels * k * k."""
    return kernel_and_bias(self.param_init, x.shape[-1] * self.kernel_size ** 2,
                           self.kernel_init)

  def _conv(self, x: jax.Array, pad, use_bias: bool, name: str | None = None) -> nn.Conv:
    kernel_init, bias_init = self._inits(x)
    return nn.Conv(self.features, (self.kernel_size,) * 2, strides=self.strides,
                   padding=pad, kernel_dilation=self.dilation, use_bias=use_bias,
                   dtype=self.dtype, kernel_init=kernel_init, bias_init=bias_init, name=name)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the conv to x of shape (N, H, W, C)."""
    check_padding(self.padding)
    k, pad = self.kernel_size, self.dilation * (self.kernel_size // 2)
    if pad == 0:
      return self._conv(x, 'VALID', self.use_bias, name='conv')(x)
    if self.padding == 'zero':
      return self._conv(x, ((pad, pad), (pad, pad)), self.use_bias, name='conv')(x)
    if self.padding in _PAD_MODES:
      x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=_PAD_MODES[self.padding])
      return self._conv(x, 'VALID', self.use_bias, name='conv')(x)
    if self.padding == 'none':
      n, h, w, c = x.shape
      # Dilated convs (DeepLab) grow by the full pad so the output size is kept.
      grow = resize_growth(k) if self.dilation == 1 else 2 * pad
      x = jax.image.resize(x, (n, h + grow, w + grow, c), method='bilinear')
      return self._conv(x, 'VALID', self.use_bias, name='conv')(x)
    # partial: rescale the bias-free zero-padded conv by window / valid taps.
    y = self._conv(x, ((pad, pad), (pad, pad)), False, name='conv')(x)
    scale = partial_conv_scale(x.shape[1], x.shape[2], k, self.strides, pad, self.dilation)
    y = y * jnp.asarray(scale, y.dtype)
    if self.use_bias:
      y = y + self.param('bias', self._inits(x)[1], (self.features,)).astype(y.dtype)
    return y
