"""Classifier heads, channel orderings, argument errors, and a short training run."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gpjax.data.canvas import make_canvas
from gpjax.models import BACKBONES, HEADS, PADDINGS, Classifier, PaddedConv, check_ordering
from gpjax.models import random_ordering

WIDTH, K = 4, 5
# Channels at permute layer 1..5 of a width-4 ResNet-18: stem, stage1..3 outputs, pooled.
LAYER_CHANNELS = {1: 4, 2: 4, 3: 8, 4: 16, 5: 32}


@pytest.fixture(scope='module')
def x():
  return jax.random.normal(jax.random.key(0), (2, 32, 32, 3))


def _model(**kwargs):
  return Classifier(**{'num_classes': K, 'width': WIDTH, **kwargs})


def _logits(model, variables, x, **kwargs):
  return np.asarray(model.apply(variables, x, train=False, **kwargs)[0])


def _perm(seed, n):
  """A random permutation that is not its own inverse (so p and argsort(p) differ)."""
  rng = np.random.default_rng(seed)
  while True:
    p = rng.permutation(n).astype(np.int32)
    if not np.array_equal(p, np.argsort(p)):
      return p


@pytest.mark.parametrize('head', HEADS)
def test_identity_ordering_leaves_logits_unchanged(init_variables, x, head):
  variables = init_variables(_model(head=head), x, train=False)
  base = _logits(_model(head=head), variables, x)
  layers = (1, 2, 3, 4) if head == 'gapnet' else (1, 2, 3, 4, 5)
  for layer in layers:
    model = _model(head=head, permute_layer=layer)
    assert model.ordering_length() == LAYER_CHANNELS[layer]
    ident = jnp.arange(LAYER_CHANNELS[layer], dtype=jnp.int32)
    np.testing.assert_allclose(_logits(model, variables, x, ordering=ident), base, rtol=1e-6,
                               atol=1e-6, err_msg=f'layer {layer}')


@pytest.mark.parametrize('head', ['permutenet', 'linear'])
def test_layer5_ordering_equals_permuted_dense_rows(init_variables, x, head):
  """logits(p) = pooled[:, p] @ W + b = pooled @ W[argsort(p)] + b (and not W[p])."""
  model = _model(head=head, permute_layer=5)
  variables = init_variables(model, x, train=False)
  p = _perm(0, 32)
  logits, feats = model.apply(variables, x, train=False, ordering=p)
  kernel, bias = (np.asarray(variables['params']['head'][n]) for n in ('kernel', 'bias'))
  pooled = np.asarray(feats['pooled'])
  np.testing.assert_allclose(pooled, np.asarray(feats['stage4']).mean((1, 2)), rtol=1e-5)
  np.testing.assert_allclose(logits, pooled[:, p] @ kernel + bias, rtol=1e-5, atol=1e-5)

  def with_kernel(w):
    params = dict(variables['params'], head={'kernel': w, 'bias': bias})
    return _logits(model, dict(variables, params=params), x)

  np.testing.assert_allclose(logits, with_kernel(kernel[np.argsort(p)]), rtol=1e-5, atol=1e-5)
  assert np.abs(logits - with_kernel(kernel[p])).max() > 1e-3
  assert np.abs(logits - with_kernel(kernel)).max() > 1e-3
  # Traced orderings (jit of a vmap over orderings, as the probes use): the same logits.
  orders = jnp.stack([jnp.asarray(p), jnp.arange(32, dtype=jnp.int32)])
  batched = jax.jit(jax.vmap(lambda o: model.apply(variables, x, train=False, ordering=o)[0]))
  out = np.asarray(batched(orders))
  np.testing.assert_allclose(out[0], logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out[1], with_kernel(kernel), rtol=1e-5, atol=1e-5)


def _permute_input_channels(params, names, p):
  """Permutes the input-channel axis of conv kernels: conv(x[..., p], W) = conv(x, W[:, :, q])
  with q = argsort(p)."""
  params = jax.tree.map(np.asarray, params)
  for path in names:
    node = params['backbone']
    for key in path.split('/'):
      node = node[key]
    node['kernel'] = node['kernel'][:, :, np.argsort(p), :]
  return params


@pytest.mark.parametrize('backbone,layer,convs', [
    ('resnet18', 2, ['stage2_block1/conv1/conv/conv', 'stage2_block1/shortcut/conv/conv']),
    ('resnet18', 3, ['stage3_block1/conv1/conv/conv', 'stage3_block1/shortcut/conv/conv']),
    ('resnet18', 4, ['stage4_block1/conv1/conv/conv', 'stage4_block1/shortcut/conv/conv']),
    ('vgg11', 1, ['stage1_conv1/conv/conv']),
    ('vgg11', 4, ['stage4_conv1/conv/conv']),
])
def test_stage_ordering_equals_permuted_conv_inputs(init_variables, x, backbone, layer, convs):
  """Permuting the input of stage k equals permuting the input channels of every conv that
  reads it (stages whose first block has a projection shortcut), and changes the logits."""
  model = _model(backbone=backbone, permute_layer=layer)
  variables = init_variables(model, x, train=False)
  p = _perm(layer, model.ordering_length())
  logits = _logits(model, variables, x, ordering=p)
  permuted = dict(variables, params=_permute_input_channels(variables['params'], convs, p))
  np.testing.assert_allclose(logits, _logits(model, permuted, x), rtol=1e-4, atol=1e-5)
  assert np.abs(logits - _logits(model, variables, x)).max() > 1e-3


@pytest.mark.parametrize('head', ['gapnet', 'permutenet'])
def test_stage1_ordering_changes_logits(init_variables, x, head):
  """Stage 1 of ResNet-18 has identity shortcuts, which carry the permuted map forward."""
  model = _model(head=head, permute_layer=1)
  variables = init_variables(model, x, train=False)
  base = _logits(model, variables, x)
  for seed in range(3):
    assert np.abs(_logits(model, variables, x, ordering=_perm(seed, 4)) - base).max() > 1e-3


@pytest.mark.parametrize('padding', PADDINGS)
def test_gapnet_logits_are_mean_of_class_map(init_variables, x, padding):
  """The head is a 3x3 conv with the model's padding and a bias; logits = spatial mean."""
  model = _model(head='gapnet', padding=padding)
  variables = init_variables(model, x, train=False)
  logits, feats = model.apply(variables, x, train=False)
  class_map = np.asarray(feats['class_map'])
  assert class_map.shape == (2, 2, 2, K)
  assert logits.dtype == jnp.float32 and logits.shape == (2, K)
  np.testing.assert_allclose(logits, class_map.mean((1, 2)), rtol=1e-5, atol=1e-6)
  head = PaddedConv(K, 3, padding=padding, use_bias=True)
  expected = head.apply({'params': variables['params']['head']}, feats['stage4'])
  np.testing.assert_allclose(class_map, np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_bf16_classifier_keeps_float32_params_and_logits(init_variables, x):
  model = _model(dtype='bfloat16')  # as a config gives it
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
  variables = init_variables(model, x, train=False)
  logits, feats = model.apply(variables, x, train=False)
  assert feats['class_map'].dtype == feats['stage4'].dtype == jnp.bfloat16
  assert logits.dtype == feats['pooled'].dtype == jnp.float32
  ref = _logits(_model(), variables, x)
  np.testing.assert_allclose(logits, ref, atol=0.05 * np.abs(ref).max())


BAD_ARGS = [
    (dict(backbone='resnet19'), None,
     ["backbone='resnet19'", *map(repr, BACKBONES)]),
    (dict(head='gap'), None, ["head='gap'", *map(repr, HEADS)]),
    (dict(padding='same'), None, ["padding='same'", *map(repr, PADDINGS)]),
    (dict(permute_layer=0), None, ['permute_layer=0', '(1, 2, 3, 4, 5)']),
    (dict(permute_layer=6), None, ['permute_layer=6', '(1, 2, 3, 4, 5)']),
    (dict(stem='cifar'), None, ["stem='cifar'", "'official'", "'imagenet'"]),
    (dict(num_classes=0), None, ['num_classes=0', '>= 1']),
    (dict(width=0), None, ['width=0', '>= 1']),
    (dict(head='linear', permute_layer=5), np.arange(31),
     ['ordering', 'shape (31,)', 'expected (32,)']),
    (dict(head='gapnet', permute_layer=3), np.arange(8)[None],
     ['ordering', 'shape (1, 8)', 'expected (8,)']),
    (dict(head='gapnet', permute_layer=1), np.array([0, 0, 2, 3]),
     ['ordering', 'not a permutation of 0..3', '[0 0 2 3]']),
    (dict(head='gapnet', permute_layer=1), np.array([1, 2, 3, 4]),
     ['ordering', 'not a permutation of 0..3', '[1 2 3 4]']),
    (dict(head='linear', permute_layer=1), np.arange(4.0),
     ['ordering', 'not a permutation of 0..3']),
    (dict(head='gapnet', permute_layer=5), np.arange(32),
     ['permute_layer=5', "'permutenet'", "'linear'", 'GAPNet']),
]


@pytest.mark.parametrize('kwargs,ordering,fragments', BAD_ARGS,
                         ids=[str(i) for i in range(len(BAD_ARGS))])
def test_errors_name_argument_value_and_choices(x, kwargs, ordering, fragments):
  with pytest.raises(ValueError) as info:
    _model(**kwargs).init(jax.random.key(0), x, train=False, ordering=ordering)
  for fragment in fragments:
    assert fragment in str(info.value), (fragment, str(info.value))


def test_check_ordering():
  check_ordering(np.array([2, 0, 1]), 3)
  with pytest.raises(ValueError, match=r'perm has shape \(4,\); expected \(3,\)'):
    check_ordering(np.arange(4), 3, name='perm')
  # Under jit the values are unknown, the length is still checked.
  jax.jit(lambda o: check_ordering(o, 3))(jnp.array([0, 0, 0]))
  with pytest.raises(ValueError, match='shape'):
    jax.jit(lambda o: check_ordering(o, 3))(jnp.arange(4))


def test_random_ordering_is_a_permutation_that_depends_on_the_key():
  orders = [np.asarray(random_ordering(jax.random.key(seed), 64)) for seed in range(8)]
  for order in orders:
    assert order.dtype == np.int32 and order.shape == (64,)
    np.testing.assert_array_equal(np.sort(order), np.arange(64))
    assert not np.array_equal(order, np.arange(64))
  assert len({order.tobytes() for order in orders}) == 8
  np.testing.assert_array_equal(random_ordering(jax.random.key(3), 64), orders[3])
  # Each channel lands uniformly: over many keys, position 0 takes many values.
  firsts = jax.vmap(lambda k: random_ordering(k, 4)[0])(jax.random.split(jax.random.key(9), 400))
  counts = np.bincount(np.asarray(firsts), minlength=4)
  assert counts.min() > 70, counts


def test_short_training_lowers_the_location_loss():
  """Tiny GAPNet (ResNet-18 width 8, zero padding) on 2x2 canvases of 8x8 random patterns
  (16x16 canvases: stage 4 is 1x1). 20 Adam steps (official lr and betas) on fresh canvases
  lower the loss on a held-out batch to well under 0.7x its initial value (0.33-0.43x over
  four seeds at 15 steps)."""
  grid, mean, std = 2, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
  model = Classifier(grid * grid, width=8, padding='zero', head='gapnet')

  def batch(key, n=32):
    k1, k2 = jax.random.split(key)
    images = jax.random.randint(k1, (n, 8, 8, 3), 0, 256).astype(jnp.uint8)
    cells = jax.random.randint(k2, (n,), 0, grid * grid)
    return make_canvas(images, cells, grid=grid, mean=mean, std=std), cells

  def loss_fn(params, stats, x, y):
    (logits, feats), new = model.apply({'params': params, 'batch_stats': stats}, x, train=True,
                                       mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, (new['batch_stats'], feats['stage4'].shape)

  x0, _ = batch(jax.random.key(100))
  assert x0.shape == (32, 16, 16, 3)
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x0)
  opt = optax.adam(1e-3, b1=0.5, b2=0.999)
  state = (variables['params'], variables['batch_stats'], opt.init(variables['params']))

  @jax.jit
  def step(state, key):
    """One update on a fresh batch; returns the loss before the update."""
    params, stats, opt_state = state
    (loss, (stats, shape)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, stats, *batch(key))
    assert shape == (32, 1, 1, 64)
    updates, opt_state = opt.update(grads, opt_state)
    return (optax.apply_updates(params, updates), stats, opt_state), loss

  held_out = jax.random.key(999)  # the update step() makes on it is discarded
  initial = float(step(state, held_out)[1])
  assert abs(initial - np.log(4)) < 0.5
  losses = []
  for i in range(20):
    state, loss = step(state, jax.random.key(i))
    losses.append(float(loss))
  final = float(step(state, held_out)[1])
  assert np.isfinite(losses).all()
  assert final < 0.7 * initial, (initial, final, losses)
