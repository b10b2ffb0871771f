"""Invariance measures (consistency, accuracy vs shift, latent distance, location readout),
the invariance job on a workdir, and the study's sweep axis and evaluator hook."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import augshift as augshift_config
from gpjax import main
from gpjax.core import checkpoint
from gpjax.core import trainer
from gpjax.core import writers
from gpjax.data import canvas
from gpjax.probes import invariance
from gpjax.tasks import classification
from gpjax.errors import ConfigError

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
H = W = 8  # Sources; grid 3 -> 24x24 canvases, offsets 0..16 per axis.


def constant_model(canvases):
  """Ignores its input: the same logits and latent for every canvas."""
  n = canvases.shape[0]
  return jnp.tile(jnp.array([[0.1, 2.0, -1.0]]), (n, 1)), jnp.full((n, 4), 3.0)


def position_model(canvases):
  """Finds the pasted (bright) source: latent = its top-left (row, col); class = col // 8."""
  mask = canvases[..., 0] > 1.0  # A white source normalises to ~2.5; the background to 0.
  row = jnp.argmax(mask.any(axis=2), axis=1)
  col = jnp.argmax(mask.any(axis=1), axis=1)
  return jax.nn.one_hot(col // 8, 3) * 10.0, jnp.stack([row, col], -1).astype(jnp.float32)


WHITE = np.full((5, H, W, 3), 255, np.uint8)
KW = dict(grid=3, mean=MEAN, std=STD, background='zero', batch_size=4)


def test_shift_pairs_fixed_by_seed_and_inside_the_canvas():
  pairs = invariance.shift_pairs(3, 64, 3, H, W)
  assert pairs.shape == (64, 2, 2) and pairs.min() == 0 and pairs.max() == 16
  np.testing.assert_array_equal(pairs, invariance.shift_pairs(3, 64, 3, H, W))
  assert not np.array_equal(pairs, invariance.shift_pairs(4, 64, 3, H, W))
  np.testing.assert_array_equal(invariance.curve_offsets(5, 3, H, W),
                                [[8, 0], [8, 4], [8, 8], [8, 12], [8, 16]])


def test_consistency_is_one_for_a_model_that_ignores_its_input():
  images = np.random.default_rng(0).integers(0, 256, (7, H, W, 3), dtype=np.uint8)
  pairs = invariance.shift_pairs(1, 10, 3, H, W)
  out = invariance.shift_measures(constant_model, images, np.ones(7, int), pairs,
                                  invariance.curve_offsets(4, 3, H, W), **KW)
  assert out['consistency'] == 1.0 and out['consistency_per_pair'] == [1.0] * 10
  assert out['pairs'] == pairs.tolist()
  assert out['latent_mse'] == 0.0 and out['latent_distance'] == 0.0
  assert out['accuracy_vs_shift']['accuracy'] == [1.0] * 4  # Always predicts class 1.


def test_measures_follow_the_stated_pairs():
  pairs = invariance.shift_pairs(5, 24, 3, H, W)
  curve = invariance.curve_offsets(5, 3, H, W)
  out = invariance.shift_measures(position_model, WHITE, np.ones(5, int), pairs, curve, **KW)
  same = pairs[:, 0, 1] // 8 == pairs[:, 1, 1] // 8  # Same predicted class at both offsets.
  assert 0 < same.sum() < len(same)
  np.testing.assert_array_equal(out['consistency_per_pair'], same.astype(float))
  assert out['consistency'] == pytest.approx(same.mean())
  assert out['accuracy_vs_shift']['accuracy'] == [0.0, 0.0, 1.0, 1.0, 0.0]  # cols 0..16.
  assert out['shifted_accuracy'] == pytest.approx(0.4)
  # Latent = (row, col) of the source: the distance by hand from the stored pairs.
  mse = ((pairs[:, 0] - pairs[:, 1]) ** 2).mean(axis=1)
  used = np.unique(np.concatenate([pairs.reshape(-1, 2), curve]), axis=0)
  variance = used.var(axis=0).mean()  # The five images are identical: over offsets only.
  assert out['latent_mse'] == pytest.approx(mse.mean())
  assert out['latent_variance'] == pytest.approx(variance)
  assert out['latent_distance'] == pytest.approx(mse.mean() / variance)
  np.testing.assert_allclose(out['latent_distance_per_pair'], mse / variance)


def test_latent_distance_scale():
  """Normalised by the latent's variance: unrelated latents ~2, a rescaled model the same."""
  rng = np.random.default_rng(0)
  table = rng.normal(size=(17, 17, 32)).astype(np.float32)  # A random latent per offset.

  def random_latent(scale):
    def apply(canvases):
      _, pos = position_model(canvases)
      pos = pos.astype(jnp.int32)
      return jnp.zeros((canvases.shape[0], 3)), scale * jnp.asarray(table)[pos[:, 0], pos[:, 1]]
    return apply

  pairs = invariance.shift_pairs(0, 200, 3, H, W)
  curve = invariance.curve_offsets(2, 3, H, W)
  one = invariance.shift_measures(random_latent(1.0), WHITE[:2], np.zeros(2, int), pairs,
                                  curve, **KW)
  ten = invariance.shift_measures(random_latent(10.0), WHITE[:2], np.zeros(2, int), pairs,
                                  curve, **KW)
  assert one['latent_distance'] == pytest.approx(2.0, abs=0.2)
  assert ten['latent_distance'] == pytest.approx(one['latent_distance'], rel=1e-5)
  assert ten['latent_mse'] == pytest.approx(100 * one['latent_mse'], rel=1e-5)


def test_readout_high_on_position_latents_chance_on_constant():
  rng = np.random.default_rng(0)
  train_cells, test_cells = rng.integers(0, 9, 450), rng.integers(0, 9, 270)

  def onehot(cells):  # One-hot of the cell in 9 of 16 channels, plus noise.
    z = np.zeros((len(cells), 16))
    z[np.arange(len(cells)), cells] = 1.0
    return z + 0.1 * rng.normal(size=z.shape)

  out = invariance.location_readout(onehot(train_cells), train_cells, onehot(test_cells),
                                    test_cells, num_cells=9)
  assert out['readout_accuracy'] >= 0.95 and out['readout_chance'] == pytest.approx(1 / 9)
  assert min(out['readout_per_cell_accuracy']) >= 0.8
  const = invariance.location_readout(np.full((450, 16), 3.0), train_cells,
                                      np.full((270, 16), 3.0), test_cells, num_cells=9)
  assert const['readout_accuracy'] == pytest.approx(const['readout_majority'])
  assert abs(const['readout_accuracy'] - 1 / 9) < 0.06


def test_readout_is_the_same_under_one_and_two_blas_threads(monkeypatch):
  """The fit runs on one thread whatever the caller's BLAS pool: the same model bit for bit
  (unpinned, 1 and 2 threads fit these 1500 x 64 latents to different coefficients)."""
  from sklearn import linear_model
  from threadpoolctl import threadpool_limits
  fits = []

  class Recorded(linear_model.LogisticRegression):
    def fit(self, *args, **kwargs):
      fits.append(self)
      return super().fit(*args, **kwargs)

  monkeypatch.setattr(linear_model, 'LogisticRegression', Recorded)
  rng = np.random.default_rng(0)
  cells = rng.integers(0, 9, 2000)
  z = (rng.normal(size=(9, 64))[cells] + 2 * rng.normal(size=(2000, 64))).astype(np.float32)
  outs = []
  for threads in (1, 2):
    with threadpool_limits(limits=threads):
      outs.append(invariance.location_readout(z[:1500], cells[:1500], z[1500:], cells[1500:],
                                              num_cells=9))
  assert outs[0] == outs[1] and outs[0]['readout_accuracy'] > 0.9
  np.testing.assert_array_equal(fits[0].coef_, fits[1].coef_)
  np.testing.assert_array_equal(fits[0].intercept_, fits[1].intercept_)


def test_readout_on_canvas_latents():
  """Through the canvas builder: a latent that locates the source reads out its cell."""
  rng = np.random.default_rng(1)
  images = np.full((300, H, W, 3), 255, np.uint8)
  images[:, 2:5, 3:6] = rng.integers(0, 256, (300, 3, 3, 3))  # Varied, still bright at corners.
  cells = invariance.random_cells(0, 300, 3)
  assert np.bincount(cells, minlength=9).min() > 15
  latents = {}
  for name, model in (('position', position_model), ('constant', constant_model)):
    _, latents[name] = invariance.latents_at(model, images, canvas.cell_offsets(cells, 3, H, W),
                                             **KW)
  np.testing.assert_array_equal(latents['position'], canvas.cell_offsets(cells, 3, H, W))
  split = slice(0, 200), slice(200, 300)
  for name, low, high in (('position', 0.99, 1.0), ('constant', 0.0, 0.25)):
    z = latents[name]
    out = invariance.location_readout(z[split[0]], cells[split[0]], z[split[1]],
                                      cells[split[1]], num_cells=9)
    assert low <= out['readout_accuracy'] <= high, (name, out)


@pytest.fixture(scope='module')
def source_workdir(tmp_path_factory, builtin_dir):
  """A workdir holding two randomly initialised tiny AugShift models (no training needed),
  checkpointed as steps 2 and 7."""
  data_dir = builtin_dir('gpjax_digits')
  workdir = tmp_path_factory.mktemp('source')
  config = augshift_config.get_config()
  config.data.data_dir = str(data_dir)
  config.data.image_size = 16
  config.data.grid = 2
  config.model.width = 4
  model = classification.create_model(config, 10)
  tx = trainer.create_optimizer(config.train, config.train.steps)
  manager = checkpoint.make_manager(str(workdir), 2)
  for seed, step in ((0, 2), (1, 7)):
    state = trainer.create_train_state(seed, model.clone(bn_axis_name=None), tx, (32, 32, 3))
    state = state.replace(step=step)  # As a trained state's own step counter.
    checkpoint.save(manager, step, state, {'config': config.to_dict()})
  manager.wait_until_finished()
  manager.close()
  writers.write_json(str(workdir / 'config.json'), config.to_dict())
  return workdir


def test_job_end_to_end(source_workdir, tmp_path):
  config = augshift_config.get_config('invariance')
  config.invariance.source_workdir = str(source_workdir)
  config.invariance.num_pairs = 6
  config.invariance.curve_points = 3
  config.invariance.num_images = 100
  config.invariance.readout_images = 300
  main.JOBS[config.job].check(config)
  results = main.JOBS[config.job].run(config, str(tmp_path))
  with open(tmp_path / 'results.json') as f:
    saved = json.load(f)
  assert os.path.isfile(tmp_path / 'invariance.png')
  assert saved['pairs'] == invariance.shift_pairs(0, 6, 2, 16, 16).tolist()
  assert saved['consistency'] == pytest.approx(np.mean(saved['consistency_per_pair']))
  assert all(v in (k / 100 for k in range(101)) for v in saved['consistency_per_pair'])
  assert saved['accuracy_vs_shift']['offsets'] == [[8, 0], [8, 8], [8, 16]]
  assert saved['num_images'] == 100 and saved['num_readout_images'] == 300
  assert saved['latent_distance'] > 0 and 0 <= saved['readout_accuracy'] <= 1
  assert saved['readout_chance'] == 0.25 and saved['chance'] == 0.1
  assert results['consistency'] == saved['consistency'] and saved['checkpoint_step'] == 7
  config.invariance.source_step = 2  # The other model: other numbers.
  early = main.JOBS[config.job].run(config, str(tmp_path / 'step2'))
  assert early['checkpoint_step'] == 2 and early['latent_distance'] != saved['latent_distance']
  config.invariance.source_workdir = str(tmp_path / 'missing')
  with pytest.raises(ConfigError, match='holds no config.json'):
    main.JOBS[config.job].check(config)
