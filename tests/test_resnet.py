"""ResNet backbones: layout against a PyTorch reference, shapes, parameter count, synced BN."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpjax.models.padding import PADDINGS
from gpjax.models.resnet import STAGE_NAMES, ResNet18, ResNet34, ResNet50

RESNETS = {'resnet18': ResNet18, 'resnet34': ResNet34, 'resnet50': ResNet50}
WIDTH = 4


def _images(n=2, size=32, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, size, size, 3))


def _t(a):
  return torch.tensor(np.asarray(a))


def _torch_resnet(variables, x, *, padding, stage_sizes, bottleneck, stem, conv,
                  dilate_last=False):
  """Independent PyTorch forward (eval mode) of a torchvision-layout ResNet (v1.5 bottleneck,
  torchvision's replace_stride_with_dilation for the last stage), reading the Flax parameters.
  Returns the stage maps (N, h, w, C)."""
  params, stats = variables['params'], variables['batch_stats']

  def conv_bn(p, s, x, stride=1, relu=True, dilation=1):
    w = _t(p['conv']['conv']['kernel']).permute(3, 2, 0, 1)
    y = conv(x, w, None, stride, padding, dilation)
    y = F.batch_norm(y, _t(s['bn']['mean']), _t(s['bn']['var']), _t(p['bn']['scale']),
                     _t(p['bn']['bias']), training=False, eps=1e-5)
    return F.relu(y) if relu else y

  x = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2)
  x = conv_bn(params['stem'], stats['stem'], x, 2)
  if stem == 'imagenet':
    x = F.max_pool2d(x, 3, 2, 1)
  out = {'stem': x}
  for i, blocks in enumerate(stage_sizes, start=1):
    for j in range(blocks):
      name = f'stage{i}_block{j + 1}'
      p, s = params[name], stats[name]
      dilated = dilate_last and i == 4
      stride = 2 if i > 1 and j == 0 and not dilated else 1
      dilation = 2 if dilated and j > 0 else 1
      if bottleneck:
        y = conv_bn(p['conv1'], s['conv1'], x)
        y = conv_bn(p['conv2'], s['conv2'], y, stride, dilation=dilation)
        y = conv_bn(p['conv3'], s['conv3'], y, relu=False)
      else:
        y = conv_bn(p['conv1'], s['conv1'], x, stride, dilation=dilation)
        y = conv_bn(p['conv2'], s['conv2'], y, relu=False, dilation=dilation)
      needs_projection = stride != 1 or x.shape[1] != y.shape[1]
      assert ('shortcut' in p) == needs_projection, name
      short = x
      if needs_projection:
        short = conv_bn(p['shortcut'], s['shortcut'], x, stride, relu=False)
      x = F.relu(y + short)
    out[f'stage{i}'] = x
  return {k: v.permute(0, 2, 3, 1).numpy() for k, v in out.items()}


@pytest.mark.parametrize('arch,padding,stem,dilate_last',
                         [('resnet18', mode, 'official', False) for mode in PADDINGS]
                         + [('resnet18', 'zero', 'imagenet', False),
                            ('resnet50', 'reflect', 'official', False),
                            ('resnet50', 'replicate', 'official', True)])
def test_matches_torch_reference(torch_conv, init_variables, arch, padding, stem, dilate_last):
  model = RESNETS[arch](width=WIDTH, padding=padding, stem=stem, dilate_last=dilate_last)
  x = _images(size=32 if stem == 'official' else 40)
  variables = init_variables(model, x, train=False)
  feats = model.apply(variables, x, train=False)
  ref = _torch_resnet(variables, x, padding=padding, stage_sizes=model.stage_sizes,
                      bottleneck=arch == 'resnet50', stem=stem, conv=torch_conv,
                      dilate_last=dilate_last)
  if dilate_last:  # output stride 16: stage 4 keeps the size of stage 3
    assert feats['stage4'].shape[1:3] == feats['stage3'].shape[1:3] == (4, 4)
  assert list(feats) == list(STAGE_NAMES)
  for name in STAGE_NAMES:
    scale = np.abs(ref[name]).max()
    assert 0.1 < scale < 100, (name, scale)  # well-conditioned comparison
    np.testing.assert_allclose(np.asarray(feats[name]), ref[name], atol=2e-5 * scale, rtol=1e-4,
                               err_msg=name)


# Spatial sizes of stem, stage1..4 on a 32x32 input. The official stem has no max-pool;
# 'none' padding shrinks the 7x7 stem output by one pixel (32 + 3 - 7) // 2 + 1 = 15.
SIZES = {
    ('official', 'pad'): (16, 16, 8, 4, 2),
    ('official', 'none'): (15, 15, 8, 4, 2),
    ('imagenet', 'pad'): (8, 8, 4, 2, 1),
    ('imagenet', 'none'): (8, 8, 4, 2, 1),
}


@pytest.mark.parametrize('arch', list(RESNETS))
@pytest.mark.parametrize('stem', ['official', 'imagenet'])
def test_every_padding_runs_with_expected_shapes(init_variables, arch, stem):
  """One set of parameters, every padding mode: shapes, finite values, and distinct outputs
  (the padding reaches the convs)."""
  x = _images()
  model = RESNETS[arch](width=WIDTH, stem=stem)
  variables = init_variables(model, x, train=False)
  expansion = 4 if arch == 'resnet50' else 1
  channels = (WIDTH, WIDTH * expansion, 2 * WIDTH * expansion, 4 * WIDTH * expansion,
              8 * WIDTH * expansion)
  assert model.stage_channels == channels
  tops = {}
  for mode in PADDINGS:
    feats = RESNETS[arch](width=WIDTH, stem=stem, padding=mode).apply(variables, x, train=False)
    sizes = SIZES[stem, 'none' if mode == 'none' else 'pad']
    for name, size, c in zip(STAGE_NAMES, sizes, channels):
      assert feats[name].shape == (2, size, size, c), (mode, name)
      assert np.isfinite(np.asarray(feats[name])).all(), (mode, name)
    tops[mode] = np.asarray(feats['stage4'])
  for a in PADDINGS:
    for b in PADDINGS:
      if a < b:
        assert np.abs(tops[a] - tops[b]).max() > 1e-4, (a, b)


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _torchvision_count(stage_sizes, bottleneck, width=64):
  """Parameters of torchvision's ResNet without fc, by layout: convs have no bias, BN has 2C."""
  total = 7 * 7 * 3 * width + 2 * width
  cin = width
  for i, blocks in enumerate(stage_sizes):
    planes = width * 2**i
    cout = planes * (4 if bottleneck else 1)
    for j in range(blocks):
      if bottleneck:
        total += cin * planes + 2 * planes + 9 * planes * planes + 2 * planes
        total += planes * cout + 2 * cout
      else:
        total += 9 * cin * planes + 2 * planes + 9 * planes * planes + 2 * planes
      if j == 0 and (i > 0 or cin != cout):
        total += cin * cout + 2 * cout
      cin = cout
  return total


@pytest.mark.parametrize('arch,stage_sizes,bottleneck,torchvision_total',
                         [('resnet18', (2, 2, 2, 2), False, 11_689_512),
                          ('resnet34', (3, 4, 6, 3), False, 21_797_672),
                          ('resnet50', (3, 4, 6, 3), True, 25_557_032)])
def test_parameter_count_matches_torchvision(arch, stage_sizes, bottleneck, torchvision_total):
  """Width 64: torchvision's published totals minus fc (512 or 2048 -> 1000, with bias)."""
  model = RESNETS[arch]()
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                          jnp.zeros((1, 64, 64, 3)))
  fc = model.stage_channels[-1] * 1000 + 1000
  assert _count(shapes['params']) == torchvision_total - fc == _torchvision_count(stage_sizes,
                                                                                  bottleneck)
  # Running mean and var: 2 per BN channel, not parameters.
  assert _count(shapes['batch_stats']) == sum(
      leaf.shape[0] for path, leaf in jax.tree_util.tree_leaves_with_path(shapes['params'])
      if path[-1].key == 'scale') * 2


def test_bf16_computes_in_bf16_with_float32_params(init_variables):
  x = _images()
  model = ResNet18(width=WIDTH, dtype=jnp.bfloat16)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
  variables = init_variables(model, x, train=False)
  feats = model.apply(variables, x, train=False)
  assert all(feats[name].dtype == jnp.bfloat16 for name in STAGE_NAMES)

  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)
  convs = [eqn for eqn in _eqns(jaxpr.jaxpr) if eqn.primitive.name == 'conv_general_dilated']
  assert len(convs) == 1 + 2 * 8 + 3  # stem, two per block, three projection shortcuts
  assert all(v.aval.dtype == jnp.bfloat16 for eqn in convs for v in eqn.invars)

  ref = ResNet18(width=WIDTH).apply(variables, x, train=False)['stage4']
  np.testing.assert_allclose(np.asarray(feats['stage4'], np.float32), np.asarray(ref),
                             atol=0.1 * float(jnp.abs(ref).max()))


def _eqns(jaxpr):
  """Every equation of a jaxpr, those of nested jaxprs (jit, custom_vjp, ...) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, 'jaxpr', sub)  # ClosedJaxpr -> Jaxpr
        if hasattr(sub, 'eqns'):
          yield from _eqns(sub)


def test_bn_axis_name_averages_statistics_across_the_axis(init_variables, check_bn_axis_name):
  """vmap over two halves with axis_name='data' gives the full batch's statistics and outputs;
  without the axis name a half has its own."""
  x = _images(n=8)
  plain, synced = ResNet18(width=WIDTH), ResNet18(width=WIDTH, bn_axis_name='data')
  variables = init_variables(plain, x, train=False)
  check_bn_axis_name(plain, synced, x, variables)
  # In eval mode the axis name is not used: the model runs outside any mapped axis.
  synced.apply(variables, x, train=False)
