"""PaddedConv against independent JAX and PyTorch computations, for every padding mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpjax.models.padding import (PADDINGS, PaddedConv, check_padding, partial_conv_scale,
                                  resize_growth)

_JNP_MODES = {'reflect': 'reflect', 'circular': 'wrap', 'replicate': 'edge'}
_ATOL = 3e-5


def _rand(seed, shape):
  return np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float32)


def _run(padding, x, kernel, bias=None, stride=1, dilation=1):
  """PaddedConv with the given kernel (k, k, I, O) and bias on x (N, H, W, C)."""
  conv = PaddedConv(kernel.shape[-1], kernel.shape[0], stride, padding, dilation,
                    use_bias=bias is not None)
  params = jax.tree.map(np.asarray, conv.init(jax.random.key(0), x))['params']
  assert params['conv']['kernel'].shape == kernel.shape
  params['conv']['kernel'] = kernel
  if bias is not None:
    # Partial conv adds its bias after rescaling, so it lives outside the conv (not for 1x1).
    # Every bias found is set, so that a second one (a bug) would show.
    holders = [h for h in (params, params['conv']) if 'bias' in h]
    assert holders
    for holder in holders:
      assert holder['bias'].shape == bias.shape
      holder['bias'] = bias
  return np.asarray(conv.apply({'params': params}, x))


def _to_torch(x, kernel, bias=None):
  tb = None if bias is None else torch.tensor(bias)
  return torch.tensor(x).permute(0, 3, 1, 2), torch.tensor(kernel).permute(3, 2, 0, 1), tb


def _from_torch(y):
  return y.permute(0, 2, 3, 1).numpy()


def _lax_conv(x, kernel, stride, dilation=1, padding='VALID'):
  return np.asarray(jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), padding, rhs_dilation=(dilation, dilation),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')))


# (kernel, stride, dilation, H, W): odd and even, square and not, the 7x7 stem.
CASES = [(3, 1, 1, 8, 11), (3, 2, 1, 8, 8), (3, 2, 1, 9, 7), (7, 2, 1, 12, 10), (3, 1, 2, 9, 8)]


@pytest.mark.parametrize('mode', ['reflect', 'circular', 'replicate'])
@pytest.mark.parametrize('k,stride,dilation,h,w', CASES)
def test_pad_modes_match_jnp_pad_and_torch(mode, k, stride, dilation, h, w):
  x, kernel = _rand(1, (2, h, w, 3)), _rand(2, (k, k, 3, 4))
  y = _run(mode, x, kernel, stride=stride, dilation=dilation)
  p = dilation * (k // 2)
  ref = _lax_conv(np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode=_JNP_MODES[mode]), kernel,
                  stride, dilation)
  np.testing.assert_allclose(y, ref, atol=_ATOL, rtol=1e-5)

  tx, tw, _ = _to_torch(x, kernel)
  functional = F.conv2d(F.pad(tx, (p, p, p, p), mode=mode), tw, None, stride, 0, dilation)
  np.testing.assert_allclose(y, _from_torch(functional), atol=_ATOL, rtol=1e-5)
  module = torch.nn.Conv2d(3, 4, k, stride, p, dilation, bias=False, padding_mode=mode)
  with torch.no_grad():
    module.weight.copy_(tw)
    np.testing.assert_allclose(y, _from_torch(module(tx)), atol=_ATOL, rtol=1e-5)


@pytest.mark.parametrize('k,stride,dilation,h,w', CASES)
def test_zero_matches_torch_symmetric_padding(k, stride, dilation, h, w):
  x, kernel, bias = _rand(3, (2, h, w, 3)), _rand(4, (k, k, 3, 4)), _rand(5, (4,))
  y = _run('zero', x, kernel, bias, stride=stride, dilation=dilation)
  tx, tw, tb = _to_torch(x, kernel, bias)
  ref = F.conv2d(tx, tw, tb, stride, dilation * (k // 2), dilation)
  np.testing.assert_allclose(y, _from_torch(ref), atol=_ATOL, rtol=1e-5)


def test_zero_is_not_flax_same_for_stride2_on_even_sizes():
  """Flax/XLA 'SAME' pads (0, 1) here; the symmetric (1, 1) pad of PyTorch is what we want."""
  x, kernel = _rand(6, (1, 8, 8, 3)), _rand(7, (3, 3, 3, 4))
  y = _run('zero', x, kernel, stride=2)
  same = _lax_conv(x, kernel, 2, padding='SAME')
  assert y.shape == same.shape == (1, 4, 4, 4)
  assert np.abs(y - same).max() > 0.1
  np.testing.assert_allclose(y, _lax_conv(x, kernel, 2, padding=((1, 1), (1, 1))), atol=_ATOL)


@pytest.mark.parametrize('k,stride,h,w',
                         [(3, 1, 8, 11), (3, 2, 8, 8), (3, 2, 9, 7), (7, 2, 12, 10)])
def test_none_is_bilinear_resize_then_valid_conv(k, stride, h, w):
  x, kernel, bias = _rand(8, (2, h, w, 3)), _rand(9, (k, k, 3, 4)), _rand(10, (4,))
  y = _run('none', x, kernel, bias, stride=stride)
  growth = {3: 2, 7: 3}[k]
  tx, tw, tb = _to_torch(x, kernel, bias)
  resized = F.interpolate(tx, size=(h + growth, w + growth), mode='bilinear', align_corners=False)
  ref = _from_torch(F.conv2d(resized, tw, tb, stride, 0))
  assert y.shape == ref.shape
  np.testing.assert_allclose(y, ref, atol=_ATOL, rtol=1e-5)


def test_none_stem_output_is_one_pixel_smaller_than_zero():
  """The official 7x7 stride-2 stem on a 96x96 canvas: 48x48 with zero padding, 47x47 with none."""
  assert [resize_growth(k) for k in (3, 7)] == [2, 3]
  x, kernel = _rand(11, (1, 96, 96, 3)), _rand(12, (7, 7, 3, 2))
  assert _run('zero', x, kernel, stride=2).shape == (1, 48, 48, 2)
  assert _run('none', x, kernel, stride=2).shape == (1, 47, 47, 2)
  # 3x3 convs keep the size of zero padding, stride 1 and 2.
  for stride, size in ((1, 96), (2, 48)):
    assert _run('none', x, _rand(13, (3, 3, 3, 2)), stride=stride).shape == (1, size, size, 2)


@pytest.mark.parametrize('k,stride,dilation,h,w', CASES)
def test_partial_matches_mask_convolution(torch_conv, k, stride, dilation, h, w):
  """Liu et al. 2018: (conv(x) - b) * window / in-image taps + b, taps from a ones-mask conv."""
  x, kernel, bias = _rand(14, (2, h, w, 3)), _rand(15, (k, k, 3, 4)), _rand(16, (4,)) + 1.0
  y = _run('partial', x, kernel, bias, stride=stride, dilation=dilation)
  tx, tw, tb = _to_torch(x, kernel, bias)
  ref = _from_torch(torch_conv(tx, tw, tb, stride, 'partial', dilation))
  np.testing.assert_allclose(y, ref, atol=_ATOL, rtol=1e-5)
  # Without the rescaling the border would differ: the reference is not trivially zero padding.
  zero = _from_torch(F.conv2d(tx, tw, tb, stride, dilation * (k // 2), dilation))
  assert np.abs(y - zero).max() > 0.1


@pytest.mark.parametrize('k,stride,h,w', [(3, 1, 6, 7), (3, 2, 8, 8), (7, 2, 12, 10)])
def test_partial_on_ones_is_flat(k, stride, h, w):
  """All-ones input and kernel: the same value at borders, corners and centre."""
  x, kernel = np.ones((1, h, w, 2), np.float32), np.ones((k, k, 2, 1), np.float32)
  y = _run('partial', x, kernel, stride=stride)
  np.testing.assert_allclose(y, np.full_like(y, k * k * 2), rtol=1e-6)
  zero = _run('zero', x, kernel, stride=stride)
  assert zero.min() < k * k * 2 - 1  # zero padding does see the border


def test_partial_conv_scale_values():
  scale = partial_conv_scale(4, 5, 3)[..., 0]
  rows, cols = np.array([2, 3, 3, 2]), np.array([2, 3, 3, 3, 2])
  np.testing.assert_allclose(scale, 9 / np.outer(rows, cols), rtol=1e-6)
  # Stride 2 on an even size: windows at 0, 2 see 2, 3 rows of a 4-row image.
  np.testing.assert_allclose(partial_conv_scale(4, 4, 3, stride=2)[..., 0],
                             9 / np.outer([2, 3], [2, 3]), rtol=1e-6)


def _border_mask(shape, width=1):
  mask = np.ones(shape, bool)
  mask[width:-width, width:-width] = False
  return mask


@pytest.mark.parametrize('other', ['partial', 'reflect', 'circular', 'replicate'])
def test_zero_differs_from_other_modes_at_the_border_only(other):
  """Stride-1 3x3 convs read padding only at the outermost output ring: there every mode
  gives its own value, and inside it every mode is the same plain conv.

  ('none' is not in this list: it resizes the whole input, so it differs from zero
  padding in the interior too; see test_none_differs_everywhere.)
  """
  x, kernel = _rand(17, (1, 9, 10, 3)), _rand(18, (3, 3, 3, 2))
  diff = np.abs(_run('zero', x, kernel) - _run(other, x, kernel))[0].max(-1)
  border = _border_mask(diff.shape)
  np.testing.assert_allclose(diff[~border], 0, atol=_ATOL)
  assert diff[border].min() > 1e-4


def test_none_differs_everywhere():
  """'none' resizes H x W to (H+2) x (W+2) before a VALID conv: every output is computed from
  interpolated pixels, so it differs from zero padding in the interior as well as the border."""
  x, kernel = _rand(19, (1, 9, 10, 3)), _rand(20, (3, 3, 3, 2))
  diff = np.abs(_run('zero', x, kernel) - _run('none', x, kernel))[0].max(-1)
  assert diff[~_border_mask(diff.shape)].min() > 1e-4


@pytest.mark.parametrize('stride', [1, 2])
def test_constant_input_flat_output(stride):
  """On a constant image circular/reflect/replicate padding and 'none' (a resize keeps a
  constant) leave no trace of the border; zero padding does. Partial conv is flat only for a
  uniform kernel (it rescales the in-image part of the kernel sum): see
  test_partial_on_ones_is_flat.
  """
  x, kernel = np.full((1, 8, 8, 2), 0.7, np.float32), _rand(21, (3, 3, 2, 3))
  flat = 0.7 * kernel.sum((0, 1, 2))
  for mode in ('circular', 'reflect', 'replicate', 'none'):
    y = _run(mode, x, kernel, stride=stride)
    np.testing.assert_allclose(y, np.broadcast_to(flat, y.shape), atol=_ATOL, err_msg=mode)
  for mode in ('zero', 'partial'):
    assert np.abs(_run(mode, x, kernel, stride=stride) - flat).max() > 0.1, mode


@pytest.mark.parametrize('mode', PADDINGS)
@pytest.mark.parametrize('stride', [1, 2])
def test_1x1_conv_is_untouched(mode, stride):
  x, kernel, bias = _rand(22, (2, 7, 6, 3)), _rand(23, (1, 1, 3, 4)), _rand(24, (4,))
  y = _run(mode, x, kernel, bias, stride=stride)
  np.testing.assert_allclose(y, _lax_conv(x, kernel, stride) + bias, atol=_ATOL)


@pytest.mark.parametrize('bad', ['same', 'Zero', 'reflection', ''])
def test_unknown_padding_raises(bad):
  with pytest.raises(ValueError) as info:
    PaddedConv(4, padding=bad).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  msg = str(info.value)
  assert f'padding={bad!r}' in msg
  assert all(repr(mode) in msg for mode in PADDINGS)
  with pytest.raises(ValueError, match='padding='):
    check_padding(bad)
  assert check_padding('partial') == 'partial'
