"""ConvBN: the padded conv, then BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1),
then ReLU; running statistics in evaluation, batch statistics in training."""

import jax
import jax.numpy as jnp
import numpy as np

from gpjax.models.layers import ConvBN


def _setup(relu=True, strides=1):
  layer = ConvBN(features=3, kernel_size=3, strides=strides, relu=relu)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 6, 2)), jnp.float32)
  variables = layer.init(jax.random.key(0), x, train=False)
  stats = {'mean': jnp.array([0.1, -0.2, 0.3]), 'var': jnp.array([0.5, 2.0, 1.0])}
  bn = {'scale': jnp.array([1.5, 0.5, -1.0]), 'bias': jnp.array([0.0, 0.2, -0.1])}
  variables = {'params': {'conv': variables['params']['conv'], 'bn': bn},
               'batch_stats': {'bn': stats}}
  return layer, x, variables


def _conv(x, kernel, strides=1):
  """The conv with a symmetric 1-pixel zero pad (PyTorch's padding=1)."""
  return jax.lax.conv_general_dilated(x, kernel, (strides, strides), ((1, 1), (1, 1)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def test_evaluation_normalises_with_the_running_statistics():
  for relu in (True, False):
    layer, x, v = _setup(relu)
    y = _conv(x, v['params']['conv']['conv']['kernel'])
    stats, bn = v['batch_stats']['bn'], v['params']['bn']
    want = (y - stats['mean']) / jnp.sqrt(stats['var'] + 1e-5) * bn['scale'] + bn['bias']
    want = jnp.maximum(want, 0) if relu else want
    got = layer.apply(v, x, train=False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert (np.asarray(got) < 0).any() != relu


def test_training_uses_batch_statistics_and_moves_the_running_ones_by_a_tenth():
  layer, x, v = _setup(relu=False, strides=2)
  got, updated = layer.apply(v, x, train=True, mutable=['batch_stats'])
  y = _conv(x, v['params']['conv']['conv']['kernel'], strides=2)
  assert y.shape == (2, 3, 3, 3)
  mean, var = y.mean((0, 1, 2)), y.var((0, 1, 2))
  bn = v['params']['bn']
  np.testing.assert_allclose(got, (y - mean) / jnp.sqrt(var + 1e-5) * bn['scale'] + bn['bias'],
                             rtol=1e-4, atol=1e-5)
  old = v['batch_stats']['bn']
  new = updated['batch_stats']['bn']
  np.testing.assert_allclose(new['mean'], 0.9 * old['mean'] + 0.1 * mean, rtol=1e-5, atol=1e-6)
  # The biased batch variance (README, Deviations: PyTorch keeps the unbiased one).
  np.testing.assert_allclose(new['var'], 0.9 * old['var'] + 0.1 * var, rtol=1e-5, atol=1e-6)
