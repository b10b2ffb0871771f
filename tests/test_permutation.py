"""Channel-permutation probes: values against per-ordering loops, chunking, errors, the job."""

import functools
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import permutation_probe, tiny
from gpjax.models import orderings as ordering_lib
from gpjax import main
from gpjax.models import Classifier
from gpjax.probes import permutation as pm
from gpjax.errors import ConfigError

GRID, SIZE, N, K = 2, 32, 10, 5  # 2x2 canvases of 32x32 pixels, 10 images, 5 orderings.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _variables(model, seed=0):
  """conftest's host-drawn random variables (no init compile), importable by the
  subprocess test below, which has no fixtures."""
  from tests.conftest import _init_variables
  return _init_variables(model, jnp.zeros((1, SIZE, SIZE, 3)), seed, train=False)


def _model(head='linear', backbone='resnet18', layer=5):
  return Classifier(num_classes=GRID * GRID, backbone=backbone, head=head, width=4,
                    permute_layer=layer)


@functools.cache
def _apply(model):
  return jax.jit(lambda v, x, p: model.apply(v, x, train=False, ordering=p)[0])


def _data(model, variables, seed=0):
  """Images, cells and labels where half the labels are the model's own prediction,
  so that accuracies differ between orderings."""
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(N, SIZE, SIZE, 3)).astype(np.float32)
  cells = rng.integers(0, GRID * GRID, N).astype(np.int32)
  predicted = np.asarray(model.apply(variables, images, train=False)[0]).argmax(-1)
  labels = np.where(np.arange(N) % 2 == 0, predicted, rng.integers(0, GRID * GRID, N))
  return images, labels.astype(np.int32), cells


def _loop(model, variables, images, orderings, layer):
  """The official way: one full forward pass per ordering. Returns (K, N, k) logits."""
  apply = _apply(model.clone(permute_layer=layer))
  return np.stack([np.asarray(apply(variables, images, jnp.asarray(p))) for p in orderings])


def _accuracies(logits, labels, cells):
  hits = logits.argmax(-1) == labels
  per_cell = np.stack([hits[:, cells == c].mean(1) if (cells == c).any() else np.zeros(len(hits))
                       for c in range(GRID * GRID)], 1)
  return hits.mean(1), per_cell


@pytest.fixture(scope='module')
def linear():
  model = _model()
  variables = _variables(model)
  return model, variables, *_data(model, variables)


def _probe(model, variables, images, labels, cells, orderings, *, layer, num_cells,
           ordering_chunk=8, image_chunk=256, mesh=None):
  """`pm.summarize` of the jitted probe (`pm.make_probe`) over in-memory images (N, H, W, 3)."""
  orderings = ordering_lib.check_orderings(
      orderings, ordering_lib.probe_model(model, layer).ordering_length())
  mesh = mesh or jax.make_mesh((jax.local_device_count(),), ('data',),
                               axis_types=(jax.sharding.AxisType.Explicit,))
  fn = pm.make_probe(model, layer=layer, num_cells=num_cells, ordering_chunk=ordering_chunk,
                     image_chunk=image_chunk, mesh=mesh)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sums = fn(jax.device_put(variables, replicated), pm.shard_batch(mesh, images, labels, cells),
            jax.device_put(orderings, replicated))
  sums = jax.device_get(sums)
  return pm.summarize(sums['correct'], sums['count'])


def _logits(model, variables, images, orderings, *, layer, ordering_chunk, image_chunk):
  """float32 (K, n, classes): the probe's per-ordering logits (`ordering_lib._over_chunks`,
  one device)."""
  @jax.jit
  def run(variables, images, orderings):
    logits = ordering_lib._over_chunks(model, variables, images, (), orderings, lambda x: x,
                                       layer=layer, ordering_chunk=ordering_chunk,
                                       image_chunk=image_chunk)
    return jnp.moveaxis(logits, 0, 1).reshape(orderings.shape[0], -1, logits.shape[-1])

  return np.asarray(run(variables, images, orderings))[:, :len(images)]


def test_random_orderings():
  rows = ordering_lib.random_orderings(3, 6, 16)
  assert rows.dtype == np.int32 and rows.shape == (6, 16)
  np.testing.assert_array_equal(rows[0], np.arange(16))
  np.testing.assert_array_equal(np.sort(rows, 1), np.tile(np.arange(16), (6, 1)))
  assert len({tuple(r) for r in rows}) == 6
  np.testing.assert_array_equal(ordering_lib.random_orderings(3, 3, 16), rows[:3])  # Prefix-stable.
  assert not np.array_equal(ordering_lib.random_orderings(4, 6, 16), rows)


@pytest.mark.parametrize('layer', [5, 2])
def test_identity_equals_plain_evaluation(linear, layer):
  model, variables, images, labels, cells = linear
  logits = np.asarray(model.apply(variables, images, train=False)[0])  # No ordering at all.
  accuracy, per_cell = _accuracies(logits[None], labels, cells)
  channels = ordering_lib.probe_model(model, layer).ordering_length()
  orderings = ordering_lib.random_orderings(0, 3, channels)
  result = _probe(model, variables, images, labels, cells, orderings, layer=layer,
                    num_cells=GRID * GRID, ordering_chunk=2, image_chunk=4)
  assert 0.5 <= result['accuracy_identity'] < 1
  assert result['accuracy_identity'] == accuracy[0]
  np.testing.assert_array_equal(result['per_location_accuracy_identity'], per_cell[0])
  assert result['num_images'] == N


def test_layer5_equals_permuted_dense_kernel(linear):
  model, variables, images, labels, cells = linear
  orderings = ordering_lib.random_orderings(1, K, 32)  # width 4: stage 4 has 32 channels.
  expected = []
  for p in orderings:
    permuted = jax.tree.map(lambda x: x, variables)
    permuted['params']['head'] = dict(variables['params']['head'],
                                      kernel=variables['params']['head']['kernel'][np.argsort(p)])
    expected.append(np.asarray(model.apply(permuted, images, train=False)[0]))
  expected = np.stack(expected)
  logits = _logits(model, variables, images, orderings, layer=5, ordering_chunk=2,
                           image_chunk=4)
  np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(logits, _loop(model, variables, images, orderings, 5), atol=1e-5)
  result = _probe(model, variables, images, labels, cells, orderings, layer=5,
                    num_cells=GRID * GRID, ordering_chunk=2, image_chunk=4)
  accuracy, per_cell = _accuracies(expected, labels, cells)
  np.testing.assert_array_equal(result['accuracy_per_ordering'], accuracy)
  np.testing.assert_array_equal(result['per_location_accuracy_per_ordering'], per_cell)
  assert len(set(result['accuracy_per_ordering'])) > 1  # The orderings do matter.
  others = accuracy[1:]
  assert result['summary'] == pytest.approx({'num_orderings': K - 1, 'mean': others.mean(),
                                             'std': others.std(), 'min': others.min(),
                                             'max': others.max()})


@pytest.mark.parametrize('backbone,layer', [('resnet18', 1), ('resnet18', 2), ('resnet18', 3),
                                            ('resnet18', 4), ('vgg11', 2)])
def test_layers_1_to_4_match_per_ordering_loop(backbone, layer):
  model = _model('gapnet', backbone)
  variables = _variables(model, seed=layer)
  images, labels, cells = _data(model, variables, seed=layer)
  channels = ordering_lib.probe_model(model, layer).ordering_length()
  orderings = ordering_lib.random_orderings(layer, K, channels)
  expected = _loop(model, variables, images, orderings, layer)
  logits = _logits(model, variables, images, orderings, layer=layer, ordering_chunk=2,
                           image_chunk=4)
  np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-5)
  result = _probe(model, variables, images, labels, cells, orderings, layer=layer,
                    num_cells=GRID * GRID, ordering_chunk=2, image_chunk=4)
  accuracy, per_cell = _accuracies(expected, labels, cells)
  np.testing.assert_array_equal(result['accuracy_per_ordering'], accuracy)
  np.testing.assert_array_equal(result['per_location_accuracy_per_ordering'], per_cell)


@pytest.mark.parametrize('layer', [5, 3])
def test_chunk_sizes_do_not_change_results(linear, layer):
  model, variables, images, labels, cells = linear
  channels = ordering_lib.probe_model(model, layer).ordering_length()
  orderings = ordering_lib.random_orderings(2, K, channels)
  results = [_probe(model, variables, images, labels, cells, orderings, layer=layer,
                      num_cells=GRID * GRID, ordering_chunk=oc, image_chunk=ic)
             for oc, ic in [(1, 1), (2, 3), (K, N)]]
  for r in results[1:]:
    assert r == results[0]


def test_bad_inputs_give_clear_errors(linear):
  model, variables, images, labels, cells = linear
  run = functools.partial(_probe, model, variables, images, labels, cells, layer=5,
                          num_cells=GRID * GRID)
  good = ordering_lib.random_orderings(0, 3, 32)
  swapped = good.copy()
  swapped[2, 0] = swapped[2, 1]
  with pytest.raises(ValueError, match=r'orderings row 2 is not a permutation of 0..31'):
    run(swapped)
  with pytest.raises(ValueError, match=r'shape \(3, 16\); expected \(K, 32\)'):
    run(good[:, :16])
  with pytest.raises(ValueError, match='row 0 must be the identity'):
    run(good[::-1])
  with pytest.raises(ValueError, match=r'layer=6 is not supported; choose one of \(1, 2, 3, 4,'):
    run(good, layer=6)
  with pytest.raises(ValueError, match="a GAPNet has no Dense: its pooled vector IS the logits"):
    _probe(_model('gapnet'), variables, images, labels, cells, good, layer=5, num_cells=4)
  with pytest.raises(ValueError, match='num_orderings=0 must be >= 1'):
    ordering_lib.random_orderings(0, 0, 16)


def _write_workdir(path, head):
  os.makedirs(os.path.join(path, 'checkpoints'))
  with open(os.path.join(path, 'config.json'), 'w') as f:
    config = tiny.get_config().to_dict()
    json.dump(config | {'model': config['model'] | {'head': head}}, f)


def _probe_config(source, **fields):
  config = permutation_probe.get_config()
  config.probe.source_workdir = str(source)
  for name, value in fields.items():
    config.probe[name] = value
  return config


def test_config_validation(tmp_path):
  _write_workdir(tmp_path / 'gapnet', 'gapnet')
  _write_workdir(tmp_path / 'linear', 'linear')
  os.makedirs(tmp_path / 'empty')
  validate = main.JOBS['permutation_probe'].check
  validate(_probe_config(tmp_path / 'linear'))
  validate(_probe_config(tmp_path / 'gapnet', layer=3))
  cases = [
      (_probe_config(''), 'config.probe.source_workdir is empty'),
      (_probe_config(tmp_path / 'missing'), 'missing\' does not exist'),
      (_probe_config(tmp_path / 'empty'), 'holds no config.json'),
      (_probe_config(tmp_path / 'gapnet'), 'is a GAPNet, whose pooled vector is its logits'),
      (_probe_config(tmp_path / 'linear', layer=0), r'config.probe.layer=0 is not allowed'),
      (_probe_config(tmp_path / 'linear', num_orderings=0), 'config.probe.num_orderings=0'),
      (_probe_config(tmp_path / 'linear', ordering_chunk=0), 'config.probe.ordering_chunk=0'),
      (_probe_config(tmp_path / 'linear', dtype='float16'), "config.probe.dtype='float16'"),
      (_probe_config(tmp_path / 'linear', layer=1, num_orderings=40321),  # Width 8: 8! = 40320.
       r'config.probe.num_orderings=40321: 8 channels at layer 1 have only 40320 orderings'),
  ]
  for config, message in cases:
    with pytest.raises(ConfigError, match=message):
      validate(config)


def test_command_line_reports_bad_config_in_one_line(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'gpjax.main', '--config=configs/permutation_probe.py',
       f'--workdir={tmp_path}/out', f'--config.probe.source_workdir={tmp_path}/missing'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1] == (
      f"Bad config: config.probe.source_workdir='{tmp_path}/missing' does not exist.")


@pytest.fixture(scope='module')
def trained(tmp_path_factory, data_dir):
  """A tiny PermuteNet trained for 2 steps; its test accuracy is the classification task's."""
  from conftest import train_tiny  # Here: subprocesses import this module without conftest.
  return pathlib.Path(train_tiny(tmp_path_factory, data_dir, 'permutenet'))


def test_job_end_to_end(trained, tmp_path):
  config = _probe_config(trained, layer=5, num_orderings=6, batch_size=700, image_chunk=256)
  main.JOBS[config.job].check(config)
  results = main.JOBS[config.job].run(config, str(tmp_path))
  with open(tmp_path / 'results.json') as f:
    saved = json.load(f)
  assert saved['accuracy_identity'] == results['accuracy_identity']
  # Same checkpoint, same test canvases (eval.seed) as the training run's final evaluation,
  # which reports this PermuteNet's identity ordering apart from its mean over orderings.
  with open(trained / 'results.json') as f:
    source = json.load(f)
  assert saved['accuracy_identity'] == pytest.approx(source['test_accuracy_identity'], abs=1e-6)
  assert saved['num_images'] == 2000 and saved['layer'] == 5 and saved['num_orderings'] == 6
  assert len(saved['accuracy_per_ordering']) == 6 and saved['summary']['num_orderings'] == 5
  assert saved['source_config']['model']['head'] == 'permutenet'
  assert saved['chance'] == 0.25
  with open(tmp_path / 'accuracy_histogram.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_sharded_over_two_devices_matches_one(tmp_path):
  """Images split over 2 (simulated CPU) devices, N odd, give the 1-device counts."""
  script = textwrap.dedent(f"""
      import jax, numpy as np
      from gpjax.models import Classifier
      from gpjax.models import orderings as ordering_lib
      from gpjax.probes import permutation as pm
      from tests.test_permutation import _data, _model, _probe, _variables
      assert jax.device_count() == 2
      model = _model()
      variables = _variables(model)
      images, labels, cells = (a[:{N - 1}] for a in _data(model, variables))
      orderings = ordering_lib.random_orderings(0, 3, 8)
      def run(devices):
        mesh = jax.make_mesh((devices,), ('data',), devices=jax.devices()[:devices],
                             axis_types=(jax.sharding.AxisType.Explicit,))
        return _probe(model, variables, images, labels, cells, orderings, layer=3,
                        num_cells=4, ordering_chunk=2, image_chunk=3, mesh=mesh)
      one, two = run(1), run(2)
      assert one == two and one['num_images'] == {N - 1}, (one, two)
      print('OK')
      """)
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip().endswith('OK'), out.stderr[-2000:]


@pytest.mark.parametrize('layer', [5, 3])
def test_a_calls_working_memory_is_set_by_its_chunks_not_its_images(layer):
  """XLA's temporaries of one jitted probe call: about the same for 4 and 8 chunks of
  images (they run one after another), more for chunks twice as large (1.7x at layer 5,
  1.6x at layer 3 here: not every buffer scales with the chunk)."""
  model = _model(layer=layer)
  mesh = jax.make_mesh((jax.local_device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Explicit,))
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  variables = jax.eval_shape(lambda: _variables(model))
  channels = ordering_lib.probe_model(model, layer).ordering_length()
  orderings = jax.ShapeDtypeStruct((K, channels), jnp.int32)

  def temp_bytes(n, image_chunk):
    fn = pm.make_probe(model, layer=layer, num_cells=GRID * GRID, ordering_chunk=2,
                       image_chunk=image_chunk, mesh=mesh)
    shapes = {'image': (n, SIZE, SIZE, 3), 'label': (n,), 'cell': (n,), 'mask': (n,)}
    dtypes = {'image': jnp.float32, 'label': jnp.int32, 'cell': jnp.int32, 'mask': bool}
    batch = {k: jax.ShapeDtypeStruct(v, dtypes[k], sharding=sharded) for k, v in shapes.items()}
    return fn.lower(variables, batch, orderings).compile().memory_analysis().temp_size_in_bytes

  chunk = 16 * jax.local_device_count()
  four, eight = temp_bytes(4 * chunk, 16), temp_bytes(8 * chunk, 16)
  larger = temp_bytes(8 * chunk, 32)
  assert four <= eight < 1.02 * four
  assert 1.4 * four < larger < 2.2 * four
