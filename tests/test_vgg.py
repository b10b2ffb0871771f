"""VGG-BN backbones: values against a PyTorch reference, shapes, parameter count, synced BN."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpjax.models.padding import PADDINGS
from gpjax.models.resnet import STAGE_NAMES
from gpjax.models.vgg import VGG11, VGG13, VGG16, VGG19

VGGS = {'vgg11': VGG11, 'vgg13': VGG13, 'vgg16': VGG16, 'vgg19': VGG19}
WIDTH = 4
CHANNELS = (4, 8, 16, 32, 32)  # width * (1, 2, 4, 8, 8)


def _images(n=2, size=32, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, size, size, 3))


def _torch_vgg(variables, x, padding, conv):
  """PyTorch eval-mode forward of VGG-BN (conv, BN, ReLU; 2x2 max-pool after each group)."""
  params, stats = variables['params'], variables['batch_stats']
  t = lambda a: torch.tensor(np.asarray(a))
  x = t(x).permute(0, 3, 1, 2)
  out = {}
  for name in STAGE_NAMES:
    j = 1
    while f'{name}_conv{j}' in params:
      p, s = params[f'{name}_conv{j}'], stats[f'{name}_conv{j}']
      x = conv(x, t(p['conv']['conv']['kernel']).permute(3, 2, 0, 1), None, 1, padding)
      x = F.relu(F.batch_norm(x, t(s['bn']['mean']), t(s['bn']['var']), t(p['bn']['scale']),
                              t(p['bn']['bias']), training=False, eps=1e-5))
      j += 1
    x = F.max_pool2d(x, 2, 2)
    out[name] = x.permute(0, 2, 3, 1).numpy()
  return out


def test_vgg11_matches_torch_reference_for_every_padding(torch_conv, init_variables):
  x = _images()
  variables = init_variables(VGG11(width=WIDTH), x, train=False)
  assert set(variables['params']) == {
      'stem_conv1', 'stage1_conv1', 'stage2_conv1', 'stage2_conv2', 'stage3_conv1',
      'stage3_conv2', 'stage4_conv1', 'stage4_conv2'}
  for mode in PADDINGS:
    feats = VGG11(width=WIDTH, padding=mode).apply(variables, x, train=False)
    ref = _torch_vgg(variables, x, mode, torch_conv)
    for name in STAGE_NAMES:
      scale = np.abs(ref[name]).max()
      assert 0.1 < scale < 100, (mode, name, scale)
      np.testing.assert_allclose(np.asarray(feats[name]), ref[name], atol=2e-5 * scale,
                                 rtol=1e-4, err_msg=f'{mode} {name}')


@pytest.mark.parametrize('arch', list(VGGS))
def test_every_padding_runs_with_expected_shapes(init_variables, arch):
  """32 -> 16 -> 8 -> 4 -> 2 -> 1 for every mode ('none' grows 3x3 inputs by 2: sizes kept)."""
  x = _images()
  model = VGGS[arch](width=WIDTH)
  assert model.stage_channels == CHANNELS
  variables = init_variables(model, x, train=False)
  tops = {}
  for mode in PADDINGS:
    feats = VGGS[arch](width=WIDTH, padding=mode).apply(variables, x, train=False)
    for name, size, c in zip(STAGE_NAMES, (16, 8, 4, 2, 1), CHANNELS):
      assert feats[name].shape == (2, size, size, c), (mode, name)
      assert np.isfinite(np.asarray(feats[name])).all(), (mode, name)
    tops[mode] = np.asarray(feats['stage3'])
  for a in PADDINGS:
    for b in PADDINGS:
      if a < b:
        assert np.abs(tops[a] - tops[b]).max() > 1e-4, (a, b)


@pytest.mark.parametrize('arch,convs,torchvision_total',
                         [('vgg11', 8, 132_868_840), ('vgg13', 10, 133_053_736),
                          ('vgg16', 13, 138_365_992), ('vgg19', 16, 143_678_248)])
def test_parameter_count_matches_torchvision(arch, convs, torchvision_total):
  """Width 64: torchvision's vgg*_bn totals minus the 3-layer classifier and minus the conv
  biases (ours are bias-free: BN follows every conv)."""
  model = VGGS[arch]()
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
  classifier = 512 * 7 * 7 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
  conv_biases = sum(
      leaf.shape[0] for path, leaf in jax.tree_util.tree_leaves_with_path(shapes['params'])
      if path[-1].key == 'scale')
  assert len(shapes['params']) == convs
  count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes['params']))
  assert count == torchvision_total - classifier - conv_biases


@pytest.mark.parametrize('size', [16, 31])
def test_small_input_raises(size):
  with pytest.raises(ValueError, match=f'at least 32x32.*got {size}x40'):
    VGG11(width=WIDTH).init(jax.random.key(0), jnp.zeros((1, size, 40, 3)), train=False)


def test_bn_axis_name_averages_statistics_across_the_axis(init_variables, check_bn_axis_name):
  x = _images(n=8)
  plain, synced = VGG11(width=WIDTH), VGG11(width=WIDTH, bn_axis_name='data')
  check_bn_axis_name(plain, synced, x, init_variables(plain, x, train=False))
