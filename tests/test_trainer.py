"""Tests for gpjax.core.trainer: the optimiser of each task (the same updates and state as the
per-task optimisers it replaced), the schedule, one state update, and pretrained weights in
the first state."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import location, segmentation
from gpjax.core import parallel
from gpjax.core import trainer
from gpjax.models.layers import ConvBN


def _params():
  """A backbone and a head group, as the DeepLab parameters are split."""
  rng = np.random.default_rng(0)
  return {'backbone': {'w': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
          'classifier': {'b': jnp.asarray(rng.normal(size=(4,)), jnp.float32)}}


def _grads(step):
  rng = np.random.default_rng(step + 1)
  return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), _params())


def _run(tx, steps=4):
  params, state, history = _params(), tx.init(_params()), []
  for s in range(steps):
    updates, state = tx.update(_grads(s), state, params)
    params = optax.apply_updates(params, updates)
    history.append(params)
  return history, state


def _classification_before(t):
  """The classification optimiser as train.create_optimizer built it."""
  if t.optimizer == 'adam':
    return optax.adam(t.learning_rate, b1=t.b1, b2=t.b2)
  if t.optimizer == 'adamw':
    return optax.adamw(t.learning_rate, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay)
  return optax.chain(optax.add_decayed_weights(t.weight_decay),
                     optax.sgd(t.learning_rate, momentum=0.9))


def _segmentation_before(t, total_steps):
  """The segmentation optimiser as segment.create_optimizer built it."""
  if t.schedule == 'poly':
    rate = optax.polynomial_schedule(t.learning_rate, 0.0, power=0.9, transition_steps=total_steps)
  else:
    rate = optax.constant_schedule(t.learning_rate)

  def make(scale):
    lr = lambda step: scale * rate(step)
    if t.optimizer == 'adam':
      return optax.adamw(lr, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay)
    return optax.chain(optax.add_decayed_weights(t.weight_decay), optax.sgd(lr, momentum=0.9))

  return optax.multi_transform(
      {'backbone': make(t.backbone_lr_scale), 'head': make(1.0)},
      lambda params: {k: 'backbone' if k == 'backbone' else 'head' for k in params})


def _assert_same(a, b):
  (params_a, state_a), (params_b, state_b) = a, b
  assert jax.tree.structure(state_a) == jax.tree.structure(state_b)
  for x, y in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


@pytest.mark.parametrize('optimizer', ['adam', 'adamw', 'sgd'])
def test_classification_optimizer_is_the_one_before(optimizer):
  t = location.get_config().train
  t.optimizer, t.weight_decay = optimizer, 1e-3
  _assert_same(_run(trainer.create_optimizer(t, 100)), _run(_classification_before(t)))
  assert t.momentum == 0.9


@pytest.mark.parametrize('size', ['cpu', 'gpu'])
@pytest.mark.parametrize('schedule', ['poly', 'constant'])
def test_segmentation_optimizer_is_the_one_before(size, schedule):
  t = segmentation.get_config(size).train
  t.schedule = schedule
  _assert_same(_run(trainer.create_optimizer(t, 6)), _run(_segmentation_before(t, 6)))
  assert (t.momentum, t.poly_power) == (0.9, 0.9)


def test_segmentation_backbone_rate_is_scaled():
  """SGD without momentum or decay: the update is -rate x gradient, 0.1 x for the backbone."""
  t = segmentation.get_config('gpu').train
  t.schedule, t.momentum, t.weight_decay = 'constant', 0.0, 0.0
  tx = trainer.create_optimizer(t, 10)
  updates, _ = tx.update(_grads(0), tx.init(_params()), _params())
  g = _grads(0)
  np.testing.assert_allclose(updates['backbone']['w'], -0.001 * g['backbone']['w'], rtol=1e-6)
  np.testing.assert_allclose(updates['classifier']['b'], -0.01 * g['classifier']['b'],
                             rtol=1e-6)


def test_schedule():
  config = ml_collections.ConfigDict({'train': {'batch_size': 48, 'steps': 0, 'epochs': 2.5,
                                                'eval_every': 0, 'checkpoint_every': 0}})
  assert trainer.schedule(config, 1000) == (53, 20, 20)  # ceil(2.5 * 1000 / 48); 1000 // 48.
  config.train.steps, config.train.eval_every, config.train.checkpoint_every = 7, 3, 2
  assert trainer.schedule(config, 1000) == (7, 3, 2)
  config.train.eval_every = config.train.checkpoint_every = 0
  assert trainer.schedule(config, 10) == (7, 1, 1)  # Fewer examples than a batch: one step.


def test_apply_gradients_steps_and_replaces_batch_stats():
  tx = optax.sgd(0.5)
  params = _params()
  state = trainer.TrainState(step=jnp.zeros((), jnp.int32), seed=jnp.asarray(3, jnp.int32),
                             params=params, batch_stats={'mean': jnp.zeros(2)},
                             opt_state=tx.init(params))
  new = trainer.apply_gradients(state, tx, _grads(0), {'mean': jnp.ones(2)})
  assert int(new.step) == 1 and int(new.seed) == 3
  np.testing.assert_array_equal(new.batch_stats['mean'], [1.0, 1.0])
  np.testing.assert_allclose(new.params['backbone']['w'],
                             params['backbone']['w'] - 0.5 * _grads(0)['backbone']['w'],
                             rtol=1e-6)


def test_weights_replace_their_leaves_and_keep_the_rest():
  """create_train_state(weights=...): the given leaves (a pretrained part) replace the
  initialised ones; every other leaf is the seed's initialisation."""
  model, tx, mesh = ConvBN(4, 3), optax.sgd(0.1), parallel.make_mesh()
  scratch = trainer.init_state(1, model, tx, (6, 6, 3), mesh)
  scale = np.arange(4, dtype=np.float32)
  var = np.full(4, 2.0, np.float32)
  weights = {'params': {'bn': {'scale': scale}}, 'batch_stats': {'bn': {'var': var}}}
  state = trainer.init_state(1, model, tx, (6, 6, 3), mesh, weights=weights)
  np.testing.assert_array_equal(state.params['bn']['scale'], scale)
  np.testing.assert_array_equal(state.batch_stats['bn']['var'], var)
  np.testing.assert_array_equal(state.params['conv']['conv']['kernel'],
                                scratch.params['conv']['conv']['kernel'])
  np.testing.assert_array_equal(state.params['bn']['bias'], np.zeros(4))
  np.testing.assert_array_equal(state.batch_stats['bn']['mean'], np.zeros(4))
  with pytest.raises(ValueError, match=r'weights params/bn/scale: the model holds \(4,\) there, '
                                       r'the weights give shape \(5,\)'):
    trainer.create_train_state(1, model, tx, (6, 6, 3),
                               {'params': {'bn': {'scale': np.ones(5, np.float32)}}})
  with pytest.raises(ValueError, match='weights params/head/bias: the model holds nothing'):
    trainer.create_train_state(1, model, tx, (6, 6, 3),
                               {'params': {'head': {'bias': np.ones(5, np.float32)}}})
