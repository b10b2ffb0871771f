"""AugShift: the loss, pixel placement and shifted pairs, config checks, the training
step's values, and default training bit-identical to the code before AugShift."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

from configs import augshift as augshift_config
from configs import augshift_study, location, micro
from gpjax import main
from gpjax.core import parallel
from gpjax.studies import grid as study
from gpjax.core import trainer
from gpjax.data import batching, canvas, examples, input_pipeline
from gpjax.models import random_ordering
from gpjax.tasks import classification
from gpjax.tasks import objectives
from gpjax.errors import ConfigError

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _ce(logits, labels):
  """Cross-entropy by hand (float64), independent of optax."""
  logits = np.asarray(logits, np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  return -logp[np.arange(len(labels)), labels].mean()


def test_loss_is_ce_plus_ce_at_lambda_zero_and_grows_with_latent_distance():
  rng = np.random.default_rng(0)
  la, lb = (rng.normal(size=(8, 5)).astype(np.float32) for _ in range(2))
  za, d = (rng.normal(size=(8, 16)).astype(np.float32) for _ in range(2))
  labels = rng.integers(0, 5, 8)
  ce = _ce(la, labels) + _ce(lb, labels)

  loss, parts = objectives.augshift_loss(la, lb, za, za + d, labels, 0.0)
  assert float(loss) == float(parts['ce'])  # lambda 0: exactly CE + CE.
  assert float(loss) == pytest.approx(ce, rel=1e-6)
  assert float(parts['latent_mse']) == pytest.approx(float(np.mean(d ** 2)), rel=1e-6)

  scales = [0.0, 0.5, 1.0, 2.0, 4.0]
  losses = [float(objectives.augshift_loss(la, lb, za, za + s * d, labels, 2.0)[0])
            for s in scales]
  assert losses[0] == pytest.approx(ce, rel=1e-6)  # Identical latents: no MSE term.
  assert all(a < b for a, b in zip(losses, losses[1:]))
  np.testing.assert_allclose(losses, [ce + 2.0 * s * s * np.mean(d.astype(np.float64) ** 2)
                                      for s in scales], rtol=1e-5)


def _make_canvas_before_augshift(images, cells, *, grid, mean, std, background='zero',
                                 rng=None):
  """`canvas.make_canvas` as it was before pixel offsets (its placement part, verbatim)."""
  n, h, w, c = images.shape
  shape = (n, grid * h, grid * w, c)
  if background == 'zero':
    out = jnp.zeros(shape, jnp.float32)
  elif background == 'noise':
    out = canvas.normalize(jax.random.uniform(rng, shape), mean, std)
  else:
    out = canvas.normalize(jnp.full(shape, 1.0 if background == 'white' else 0.0), mean, std)
  row, col = jnp.divmod(cells.astype(jnp.int32), grid)

  def paste(out, image, r, c):
    return jax.lax.dynamic_update_slice(out, image, (r * h, c * w, 0))

  return jax.vmap(paste)(out, canvas.normalize(images, mean, std), row, col)


@pytest.mark.parametrize('background', canvas.BACKGROUNDS)
def test_cell_is_the_special_case_of_a_pixel_offset(background):
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (9, 4, 5, 3), dtype=np.uint8)
  cells = np.arange(9)
  kw = dict(grid=3, mean=MEAN, std=STD, background=background, rng=jax.random.key(3))
  new = np.asarray(canvas.make_canvas(images, cells, **kw))
  np.testing.assert_array_equal(new, _make_canvas_before_augshift(images, cells, **kw))
  np.testing.assert_array_equal(
      new, canvas.make_canvas_at(images, canvas.cell_offsets(cells, 3, 4, 5), **kw))


def test_pixel_offset_places_the_image_exactly():
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
  offsets = np.array([[0, 0], [3, 7], [8, 10]])  # (8, 10) = offset_range(3, 4, 5): bottom right.
  assert canvas.offset_range(3, 4, 5) == (8, 10)
  out = np.asarray(canvas.make_canvas_at(images, offsets, grid=3, mean=MEAN, std=STD,
                                         background='white'))
  for i, (r, c) in enumerate(offsets):
    expected = np.broadcast_to((1.0 - np.float32(MEAN)) / np.float32(STD), (12, 15, 3)).copy()
    expected[r:r + 4, c:c + 5] = (images[i] / 255.0 - np.float32(MEAN)) / np.float32(STD)
    np.testing.assert_allclose(out[i], expected, atol=1e-5)


def _pairs(keys, images, **kw):
  return [np.asarray(x) for x in canvas.shifted_pair_batch(
      keys, images, grid=3, mean=MEAN, std=STD, **kw)]


@pytest.mark.parametrize('placement,max_shift', [('pixel', 0), ('pixel', 3), ('cell', 0)])
def test_shifted_pairs_same_image_two_offsets_keyed_per_example(placement, max_shift):
  rng = np.random.default_rng(3)
  images = rng.integers(1, 256, (64, 4, 5, 3), dtype=np.uint8)
  keys = jax.vmap(functools.partial(jax.random.fold_in, jax.random.key(7)))(jnp.arange(64))
  kw = dict(background='zero', flip=True, placement=placement, max_shift=max_shift)
  a, b, oa, ob = _pairs(keys, images, **kw)
  for o in (oa, ob):
    assert (o >= 0).all() and (o <= np.array([8, 10])).all()
    if placement == 'cell':
      assert (o % np.array([4, 5]) == 0).all()
  if max_shift:
    assert (np.abs(oa - ob) <= max_shift).all() and (oa != ob).any()
  else:
    assert (np.abs(oa - ob) > 3).any()  # Independent offsets: far apart sometimes.
  flipped = 0
  for i in range(64):  # Both copies hold the same (possibly flipped) source.
    pa = a[i, oa[i, 0]:oa[i, 0] + 4, oa[i, 1]:oa[i, 1] + 5]
    pb = b[i, ob[i, 0]:ob[i, 0] + 4, ob[i, 1]:ob[i, 1] + 5]
    np.testing.assert_array_equal(pa, pb)
    source = (images[i] / 255.0 - np.float32(MEAN)) / np.float32(STD)
    flipped += not np.allclose(pa, source, atol=1e-5)
    np.testing.assert_allclose(pa, source if np.allclose(pa, source, atol=1e-5)
                               else source[:, ::-1], atol=1e-5)
  assert 10 < flipped < 54
  # Example i's pair depends on its key only, not on the batch it is in.
  sub = _pairs(keys[10:20], images[10:20], **kw)
  for full, part in zip((a, b, oa, ob), sub):
    np.testing.assert_array_equal(full[10:20], part)


def test_shifted_pairs_share_one_noise_background():
  images = np.full((4, 4, 5, 3), 255, np.uint8)
  keys = jax.vmap(functools.partial(jax.random.fold_in, jax.random.key(0)))(jnp.arange(4))
  a, b, oa, ob = _pairs(keys, images, background='noise')
  for i in range(4):
    outside = np.ones((12, 15), bool)
    for o in (oa[i], ob[i]):
      outside[o[0]:o[0] + 4, o[1]:o[1] + 5] = False
    np.testing.assert_array_equal(a[i][outside], b[i][outside])
  assert not np.array_equal(a[0], a[1])


def test_config_defaults_disabled_and_errors():
  for config in (location.get_config(), micro.get_config(), augshift_config.get_config()):
    classification.check(config)
  assert not location.get_config().augshift.enabled
  config = augshift_config.get_config()
  assert config.augshift.enabled and config.task == 'semantic'
  config.task = 'location'
  with pytest.raises(ConfigError, match=r"augshift.enabled=True with config.task='location'"):
    main.JOBS[config.job].check(config)
  config = augshift_config.get_config()
  config.augshift.placement = 'cell'
  config.augshift.max_shift = 4
  with pytest.raises(ConfigError, match='max_shift=4 needs'):
    classification.check(config)
  config = augshift_config.get_config()
  config.augshift.weight = -1.0
  with pytest.raises(ConfigError, match='augshift.weight=-1.0'):
    classification.check(config)
  config = augshift_config.get_config()
  config.augshift.placement = 'anywhere'
  with pytest.raises(ConfigError, match='augshift.placement'):
    classification.check(config)


def test_study_config_grid():
  config = augshift_study.get_config()
  main.JOBS[config.job].check(config)
  sweep = study.parse_sweep(config.base, config.study.sweep_field, config.study.sweep_values)
  runs = study.run_configs(config, sweep)
  assert [n for n, _ in runs][:4] == ['semantic_linear_zero_g3_weight0_s0',
                                      'semantic_linear_zero_g3_weight0_s1',
                                      'semantic_linear_zero_g3_weight0_s2',
                                      'semantic_linear_zero_g3_weight1_s0']
  assert all(r.augshift.enabled for _, r in runs)
  assert sorted({r.augshift.weight for _, r in runs}) == [0.0, 1.0, 10.0]
  assert augshift_study.get_config('gpu').base.data.name == 'cifar10'
  with pytest.raises(ConfigError, match='not a field'):
    study.parse_sweep(config.base, 'augshift.lambda', '1')


@pytest.fixture(scope='module')
def setup(builtin_dir):
  """Tiny digits canvases (16x16 sources, g=2), width-4 ResNet-18, one batch of 8."""
  src, info = input_pipeline.load_source('gpjax_digits', 'train',
                                         data_dir=builtin_dir('gpjax_digits'),
                                         image_size=16)
  return src, info


def _config(task='semantic', **augshift):
  config = micro.get_config(task)
  config.data.image_size = 16
  config.train.batch_size = 8
  for k, v in augshift.items():
    config.augshift[k] = v
  return config


def _runner_step(step_fn, config, info, mesh):
  """The step as `train_and_evaluate` compiles it."""
  model, tx = classification.create_model(config, classification.num_classes(config, info)), \
      trainer.create_optimizer(config.train, config.train.steps)
  shard = functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
                            out_specs=(P(), P()))
  return model, tx, jax.jit(shard(functools.partial(step_fn, model=model, tx=tx, config=config,
                                                    info=info)))


def _init(config, info, mesh, model, tx):
  h, w, c = info.image_shape
  state = trainer.create_train_state(config.seed, model.clone(bn_axis_name=None),
                                   tx, (config.data.grid * h, config.data.grid * w, c))
  return jax.device_put(state, parallel.replicated(mesh))


def _first_step(config, src, info):
  """Step 0 of the runner's step on the first batch of 8: (batch, model, the variables
  before it, the state after it, its metrics on the host)."""
  mesh = parallel.make_mesh()
  batch = batching.host_batch(src, 0, global_batch_size=8, seed=0)
  model, tx, step = _runner_step(classification.train_step, config, info, mesh)
  state = _init(config, info, mesh, model, tx)
  variables = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  new_state, metrics = step(state, parallel.to_global(mesh, batch))
  return batch, model, variables, new_state, jax.device_get(metrics)


def test_augshift_step_values(setup):
  """The runner's step against a recomputation by hand from the same pair canvases."""
  src, info = setup
  weight = 0.5
  config = _config(enabled=True, weight=weight, max_shift=6)
  batch, model, variables, new_state, metrics = _first_step(config, src, info)

  @jax.jit
  def by_hand(variables, batch):  # Step 0's key; both copies in one training-mode batch.
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 0), 0)
    xa, xb, labels = examples.make_shifted_pairs(key, batch, config, info, flip=True)
    (logits, feats), _ = model.clone(bn_axis_name=None).apply(
        variables, jnp.concatenate([xa, xb]), train=True, mutable=['batch_stats'])
    return logits, feats['pooled'], labels

  logits, z, labels = jax.device_get(by_hand(variables, batch))
  z = z.astype(np.float64)
  ce = _ce(logits[:8], labels) + _ce(logits[8:], labels)
  mse = np.mean((z[:8] - z[8:]) ** 2)
  assert metrics['ce'] == pytest.approx(ce, rel=1e-5)
  assert metrics['latent_mse'] == pytest.approx(mse, rel=1e-4) and mse > 0
  assert metrics['loss'] == pytest.approx(ce + weight * mse, rel=1e-5)
  correct = np.argmax(logits, -1) == np.concatenate([labels, labels])
  assert metrics['accuracy'] == pytest.approx(correct.mean())
  assert int(new_state.step) == 1
  assert not np.array_equal(jax.device_get(new_state.params)['head']['kernel'],
                            variables['params']['head']['kernel'])


def test_standard_baseline_step_is_cross_entropy_on_copy_one(setup):
  """augshift.copies = 1: the step's loss is CE of the first shifted copy alone (the
  standard baseline), its batch B canvases, not 2B; lambda must be 0."""
  src, info = setup
  config = _config(enabled=True, weight=0.0, copies=1)
  batch, model, variables, _, metrics = _first_step(config, src, info)

  @jax.jit
  def by_hand(variables, batch):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 0), 0)
    xa, _, labels = examples.make_shifted_pairs(key, batch, config, info, flip=True)
    (logits, _), _ = model.clone(bn_axis_name=None).apply(variables, xa, train=True,
                                                           mutable=['batch_stats'])
    return logits, labels

  logits, labels = jax.device_get(by_hand(variables, batch))
  assert set(metrics) == {'loss', 'accuracy'}
  assert metrics['loss'] == pytest.approx(_ce(logits, labels), rel=1e-5)
  assert metrics['accuracy'] == pytest.approx(np.mean(np.argmax(logits, -1) == labels))
  config.augshift.weight = 1.0
  with pytest.raises(ConfigError, match=r'augshift.weight=1.0 needs config.augshift.copies=2'):
    classification.check(config)


def _train_step_before_augshift(state, batch, *, model, tx, config, info):
  """`classification.train_step` as it was before AugShift, verbatim."""
  key = jax.random.fold_in(jax.random.key(config.seed), state.step)
  images, labels, _ = examples.make_examples(jax.random.fold_in(key, 0), batch, config, info,
                                          flip=config.data.flip)
  ordering = None
  if config.model.head == 'permutenet':  # One fresh ordering per step, shared by the batch.
    ordering = random_ordering(jax.random.fold_in(key, 1), model.ordering_length())

  def loss_fn(params):
    (logits, _), updates = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
        ordering=ordering, mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return lax.pmean(loss, parallel.DATA_AXIS), (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  accuracy = lax.pmean(jnp.mean(jnp.argmax(logits, -1) == labels), parallel.DATA_AXIS)
  new_state = trainer.TrainState(step=state.step + 1, seed=state.seed, params=params,
                               batch_stats=batch_stats, opt_state=opt_state)
  return new_state, {'loss': loss, 'accuracy': accuracy}


@pytest.mark.product_emitters
@pytest.mark.parametrize('task', ['location', 'semantic'])
def test_default_training_is_bit_identical_to_before(setup, monkeypatch, task):
  """3 steps of the default config (AugShift off) against the pre-AugShift step, with the
  AugShift functions made to fail, so the feature path provably is not taken."""
  src, info = setup
  mesh = parallel.make_mesh()
  config = _config(task)
  assert not config.augshift.enabled

  def fail(*args, **kwargs):
    raise AssertionError('AugShift path taken with augshift.enabled=False')

  for module, name in ((objectives, 'augshift_step'), (examples, 'make_shifted_pairs'),
                       (objectives, 'augshift_loss')):
    monkeypatch.setattr(module, name, fail)
  finals = []
  for step_fn in (classification.train_step, _train_step_before_augshift):
    model, tx, step = _runner_step(step_fn, config, info, mesh)
    state = _init(config, info, mesh, model, tx)
    for s in range(3):
      batch = batching.host_batch(src, s, global_batch_size=8, seed=config.seed)
      state, metrics = step(state, parallel.to_global(mesh, batch))
    finals.append((jax.device_get(state), jax.device_get(metrics)))
  (new, new_metrics), (old, old_metrics) = finals
  assert set(new_metrics) == {'loss', 'accuracy'}
  leaves_new, leaves_old = jax.tree.leaves(new), jax.tree.leaves(old)
  assert len(leaves_new) == len(leaves_old) > 10
  for a, b in zip(leaves_new, leaves_old):
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
  assert new_metrics['loss'].tobytes() == old_metrics['loss'].tobytes()
  # And the parameters did move: the comparison is not between two initial states.
  init = jax.device_get(_init(config, info, mesh, model, tx).params)
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new.params),
                                                      jax.tree.leaves(init)))
