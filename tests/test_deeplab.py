"""DeepLabv3: output stride 16, every padding, the channel mask, the features entry, dropout,
the backbone's BatchNorm momentum, and the bilinear upsampling against PyTorch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpjax.models.deeplab import DeepLabV3
from gpjax.models.padding import PADDINGS

K = 3


def _images(n=2, h=32, w=48, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, h, w, 3))


@pytest.fixture(scope='module')
def r50(init_variables):
  model = DeepLabV3(num_classes=K, width=2, aspp_features=4)
  return model, init_variables(model, _images(), train=False)


def test_resnet50_output_stride_16_and_features(r50):
  model, variables = r50
  logits, feats = model.apply(variables, _images(h=64, w=96), train=False)
  assert logits.shape == (2, 64, 96, K) and logits.dtype == jnp.float32
  assert feats['stage4'].shape == (2, 4, 6, 64) == (2, 64 // 16, 96 // 16, model.feature_channels)
  assert feats['stage3'].shape[1:3] == feats['stage4'].shape[1:3]  # Dilated, not strided.
  np.testing.assert_allclose(feats['pooled'], feats['stage4'].mean((1, 2)), rtol=1e-6)


@pytest.mark.parametrize('padding', PADDINGS)
def test_every_backbone_padding(init_variables, padding):
  x = _images()
  model = DeepLabV3(num_classes=K, backbone='resnet18', width=4, aspp_features=4,
                    padding=padding, head_padding=padding)
  variables = init_variables(model, x, train=False)
  logits, feats = model.apply(variables, x, train=False)
  assert logits.shape == (2, 32, 48, K) and np.isfinite(logits).all()
  assert feats['stage4'].shape == (2, 2, 3, 32)


def test_channel_mask_and_features_entry(r50):
  model, variables = r50
  x = _images()
  logits, feats = model.apply(variables, x, train=False)
  ones = jnp.ones(model.feature_channels)
  np.testing.assert_array_equal(model.apply(variables, x, train=False, channel_mask=ones)[0],
                                logits)
  mask = np.ones(model.feature_channels, np.float32)
  mask[[0, 5, 33]] = 0
  masked, masked_feats = model.apply(variables, x, train=False, channel_mask=mask)
  np.testing.assert_array_equal(masked_feats['stage4'], feats['stage4'])  # Features: unmasked.
  # The head on a map with those channels zeroed by hand gives the same logits.
  zeroed = feats['stage4'] * mask
  by_hand, _ = model.apply(variables, zeroed, train=False, from_features=True,
                           output_size=x.shape[1:3])
  np.testing.assert_allclose(masked, by_hand, rtol=1e-6, atol=1e-6)
  assert np.abs(masked - logits).max() > 1e-4
  # With every channel zeroed the head sees no image: all images get the same logits (which
  # still vary over the image: the head's zero padding marks its borders).
  blind, _ = model.apply(variables, x, train=False, channel_mask=jnp.zeros_like(ones))
  np.testing.assert_allclose(blind[0], blind[1], atol=1e-6)
  with pytest.raises(ValueError, match='channel_mask has shape'):
    model.apply(variables, x, train=False, channel_mask=jnp.ones(3))
  with pytest.raises(ValueError, match='output_size'):
    model.apply(variables, feats['stage4'], train=False, from_features=True)


def test_dropout_only_in_training(init_variables):
  x = _images()
  model = DeepLabV3(num_classes=K, backbone='resnet18', width=2, aspp_features=4)
  variables = init_variables(model, x, train=False)

  def run(seed):
    return model.apply(variables, x, train=True, mutable=['batch_stats'],
                       rngs={'dropout': jax.random.key(seed)})[0][0]

  assert np.abs(run(0) - run(1)).max() > 1e-4
  np.testing.assert_array_equal(run(0), run(0))
  model0 = model.clone(dropout=0.0)
  a = model0.apply(variables, x, train=True, mutable=['batch_stats'],
                   rngs={'dropout': jax.random.key(0)})[0][0]
  b = model0.apply(variables, x, train=True, mutable=['batch_stats'],
                   rngs={'dropout': jax.random.key(1)})[0][0]
  np.testing.assert_array_equal(a, b)


def test_upsampling_matches_torch_bilinear():
  """jax.image.resize (linear, upsampling) = F.interpolate(align_corners=False) at x16."""
  y = np.random.default_rng(0).normal(size=(2, 3, 5, 4)).astype(np.float32)
  ours = jax.image.resize(jnp.asarray(y), (2, 48, 80, 4), method='bilinear')
  ref = F.interpolate(torch.tensor(y).permute(0, 3, 1, 2), size=(48, 80), mode='bilinear',
                      align_corners=False).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_backbone_bn_momentum_sets_the_backbone_running_averages_only(init_variables):
  """One training pass: every backbone BatchNorm's running mean and variance become
  m x running + (1 - m) x batch with m = backbone_bn_momentum, the head's with 0.9."""
  x = _images()
  model = DeepLabV3(num_classes=K, backbone='resnet18', width=2, aspp_features=4, dropout=0.0)
  variables = init_variables(model, x, train=False)

  def new_stats(m):
    _, updates = model.clone(backbone_bn_momentum=m).apply(
        variables, x, train=True, mutable=['batch_stats'])
    return updates['batch_stats']

  old = variables['batch_stats']
  slow, default = new_stats(0.99), new_stats(0.9)

  def batch_stats(new, m):  # Solved from new = m x old + (1 - m) x batch.
    return jax.tree.leaves(jax.tree.map(lambda n, o: (n - m * o) / (1 - m), new['backbone'],
                                        old['backbone']))

  # The batch statistics do not depend on the momentum: both runs solve to the same ones.
  for a, b in zip(batch_stats(slow, 0.99), batch_stats(default, 0.9)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
  for a, b in zip(jax.tree.leaves(slow['aspp']), jax.tree.leaves(default['aspp'])):
    np.testing.assert_array_equal(a, b)
  # The stem's batch mean, computed here: its conv on the images, as the backbone runs it.
  kernel = variables['params']['backbone']['stem']['conv']['conv']['kernel']
  stem = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((3, 3), (3, 3)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  want = 0.99 * old['backbone']['stem']['bn']['mean'] + 0.01 * stem.mean((0, 1, 2))
  np.testing.assert_allclose(slow['backbone']['stem']['bn']['mean'], want, rtol=1e-5, atol=1e-6)
  assert np.abs(slow['backbone']['stem']['bn']['mean'] -
                default['backbone']['stem']['bn']['mean']).max() > 1e-3
