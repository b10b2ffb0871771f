"""End-to-end tests of the classification task (the ``train`` job), in process: a micro run
that learns, what it leaves in its workdir, and the CIFAR-10 path under tfds mock data (the
non-finite guards of its training: test_loop)."""

import json
import math
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from test_writers import tensorboard_scalars

from configs import micro
from gpjax.core import checkpoint
from gpjax.data import batching, examples, input_pipeline
from gpjax.tasks import classification


def micro_config(data_dir, **overrides):
  """configs/micro.py with ``section__field=value`` overrides."""
  config = micro.get_config()
  config.data.data_dir = data_dir
  for key, value in overrides.items():
    section, field = key.split('__')
    config[section][field] = value
  return config


def read_rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def eval_cell_counts(config, info, source):
  """How many test canvases put their image in each cell (recomputed from the
  same keys the trainer uses), to weight the per-location accuracies."""
  counts = np.zeros(config.data.grid ** 2, np.int64)
  for batch in batching.eval_batches(source, config.eval.batch_size):
    _, _, cells = examples.make_examples(jax.random.key(config.eval.seed), batch, config, info,
                                         flip=False)
    counts += np.bincount(np.asarray(cells)[batch['mask']], minlength=len(counts))
  return counts


@pytest.fixture(scope='module')
def micro_run(data_dir, tmp_path_factory):
  config = micro_config(data_dir)
  workdir = str(tmp_path_factory.mktemp('micro'))
  return config, workdir, classification.train_and_evaluate(config, workdir)


def test_micro_run_learns_location(micro_run, data_dir):
  """GAPNet with zero padding locates the pasted image on the built-in photos."""
  config, workdir, results = micro_run
  with open(os.path.join(workdir, 'results.json')) as f:
    on_disk = json.load(f)
  assert on_disk == json.loads(json.dumps(results))
  assert on_disk['config'] == json.loads(json.dumps(config.to_dict()))  # Tuples as lists.
  assert on_disk['steps'] == config.train.steps == 30
  assert on_disk['dataset'] == 'gpjax_photos'
  assert on_disk['num_devices'] == jax.device_count() and on_disk['num_processes'] == 1
  accuracy = on_disk['test_accuracy']
  assert accuracy > 0.9  # Chance is 0.25; measured 0.982 (0.814 at step 15).
  assert on_disk['best_test_accuracy'] >= accuracy and on_disk['best_step'] in (15, 30)
  assert math.isfinite(on_disk['test_loss']) and on_disk['test_loss'] < math.log(4)

  per_location = np.array(on_disk['per_location_accuracy'])
  assert per_location.shape == (4,)
  assert np.all((per_location >= 0) & (per_location <= 1))
  source, info = input_pipeline.load_source('gpjax_photos', 'test', data_dir=data_dir)
  counts = eval_cell_counts(config, info, source)
  assert counts.sum() == info.num_test == 2000 and np.all(counts > 300)
  # The overall accuracy is the count-weighted mean of the per-cell accuracies.
  np.testing.assert_allclose(per_location @ counts / counts.sum(), accuracy, rtol=1e-6)
  # Each cell's accuracy is a whole number of correct canvases over its count.
  np.testing.assert_allclose(per_location * counts, np.round(per_location * counts), atol=1e-3)
  # results.json's curve is the evaluations of metrics.jsonl, their scalars.
  test_rows = [r for r in read_rows(workdir) if r['split'] == 'test']
  assert on_disk['curve'] == [{k: v for k, v in r.items() if isinstance(v, (int, float))}
                              for r in test_rows]
  assert [e['step'] for e in on_disk['curve']] == [15, 30]
  assert on_disk['curve'][-1]['test_accuracy'] == accuracy


def test_micro_run_metrics_and_files(micro_run):
  config, workdir, results = micro_run
  rows = read_rows(workdir)
  train_rows = [r for r in rows if r['split'] == 'train']
  test_rows = [r for r in rows if r['split'] == 'test']
  assert [r['step'] for r in train_rows] == [5, 10, 15, 20, 25, 30]  # log_every=5
  assert [r['step'] for r in test_rows] == [15, 30]  # eval_every=15
  assert [r['step'] for r in rows] == sorted(r['step'] for r in rows)
  for r in train_rows:
    assert math.isfinite(r['loss']) and 0 <= r['accuracy'] <= 1 and r['images_per_s'] > 0
  assert train_rows[-1]['loss'] < train_rows[0]['loss'] / 2
  assert test_rows[-1]['test_accuracy'] == pytest.approx(results['test_accuracy'], rel=1e-6)
  assert test_rows[-1]['per_location_accuracy'] == pytest.approx(
      results['per_location_accuracy'], rel=1e-6)
  assert results['best_step'] in (15, 30)
  assert results['best_test_accuracy'] == pytest.approx(
      max(r['test_accuracy'] for r in test_rows), rel=1e-6)

  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f) == json.loads(json.dumps(config.to_dict()))

  with open(os.path.join(workdir, 'per_location_accuracy.png'), 'rb') as f:
    png = f.read()
  assert png.startswith(b'\x89PNG\r\n\x1a\n') and len(png) > 1000

  scalars = tensorboard_scalars(workdir)
  assert [s for s, _ in scalars['train/loss']] == [5, 10, 15, 20, 25, 30]
  np.testing.assert_allclose([v for _, v in scalars['train/loss']],
                             [r['loss'] for r in train_rows], rtol=1e-6)
  assert [s for s, _ in scalars['test/test_accuracy']] == [15, 30]

  # Checkpoints every 5 steps, all kept (keep_checkpoints=10); the newest holds step 30.
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')))
  assert steps == [5, 10, 15, 20, 25, 30]
  state = checkpoint.restore_raw(workdir)
  assert int(state['step']) == 30
  leaves = jax.tree.leaves(state['params'])
  assert leaves and all(np.all(np.isfinite(x)) for x in leaves)


def test_cifar10_path_under_mock_data(tmp_path):
  """--config.data.name=cifar10 trains and evaluates under tfds mock data (random
  32x32 images, 10 classes, 48 examples per split)."""
  config = micro.get_config()
  config.data.name = 'cifar10'
  config.data.data_dir = str(tmp_path / 'tfds')
  config.train.steps = 2
  config.train.log_every = 1
  config.eval.batch_size = 16
  workdir = str(tmp_path / 'run')
  with tfds.testing.mock_data(num_examples=48, policy=tfds.testing.MockPolicy.USE_CODE):
    results = classification.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'results.json')) as f:
    on_disk = json.load(f)
  assert on_disk['dataset'] == 'cifar10' and on_disk['steps'] == 2
  assert on_disk['test_accuracy'] == pytest.approx(results['test_accuracy'])
  # 48 test canvases: the accuracy is a whole number of them.
  assert on_disk['test_accuracy'] * 48 == pytest.approx(round(on_disk['test_accuracy'] * 48),
                                                        abs=1e-4)
  assert len(on_disk['per_location_accuracy']) == 4
  assert math.isfinite(on_disk['test_loss'])
  rows = read_rows(workdir)
  assert [(r['step'], r['split']) for r in rows] == [(1, 'train'), (2, 'train'), (2, 'test')]
  assert all(math.isfinite(r['loss']) for r in rows if r['split'] == 'train')


@pytest.mark.parametrize('layer', [5, 3])
def test_permutenet_tested_under_orderings(builtin_dir, tmp_path, layer):
  """A PermuteNet's test accuracy is the mean over ``eval.orderings`` random orderings, as the
  official test averages over its per-batch orderings: it equals the mean of the permutation
  probe's per-ordering accuracies (same seed, same rows) on the same checkpoint and canvases;
  the identity ordering is reported apart. (On the digits' 297 test canvases of 16x16: on the
  photos' 2,000 of 32x32 the two cases took 78 s in one process, here 25 s.)"""
  from configs import permutation_probe
  from gpjax.tasks import runs
  from gpjax.probes import permutation
  config = micro_config(builtin_dir('gpjax_digits'), data__name='gpjax_digits',
                        data__image_size=8, model__head='permutenet', model__permute_layer=layer,
                        train__steps=10, train__eval_every=10, train__eval_at=(4,),
                        eval__orderings=5, eval__ordering_chunk=2)
  results = classification.train_and_evaluate(config, str(tmp_path))
  probe = permutation_probe.get_config()
  probe.probe.seed, probe.probe.num_orderings = config.eval.seed, 1 + config.eval.orderings
  probe.probe.layer = layer
  probe.probe.ordering_chunk = 3
  run = runs.load_run(str(tmp_path))
  probed = permutation.evaluate(probe, run)
  per_ordering = np.array(probed['accuracy_per_ordering'])
  np.testing.assert_allclose(results['test_accuracy'], per_ordering[1:].mean(), rtol=1e-6)
  np.testing.assert_allclose(results['test_accuracy_identity'], per_ordering[0], rtol=1e-6)
  spread = results['test_accuracy_orderings']
  assert spread['num_orderings'] == 5
  np.testing.assert_allclose([spread['min'], spread['max'], spread['std']],
                             [per_ordering[1:].min(), per_ordering[1:].max(),
                              per_ordering[1:].std()], rtol=1e-6)
  np.testing.assert_allclose(results['per_location_accuracy'],
                             np.mean(probed['per_location_accuracy_per_ordering'][1:], 0),
                             rtol=1e-6)
  # The curve: both evaluations (train.eval_at and the final one), the best of them kept.
  assert [e['step'] for e in results['curve']] == [4, 10]
  assert results['curve'][-1]['test_accuracy'] == results['test_accuracy']
  assert results['curve'][-1]['test_accuracy_identity'] == results['test_accuracy_identity']
  assert results['best_test_accuracy'] == max(e['test_accuracy'] for e in results['curve'])


def test_unpermuted_heads_report_one_accuracy(micro_run):
  """GAPNet (no ordering at test): no identity/ordering keys, the accuracy is its own."""
  _, _, results = micro_run
  assert 'test_accuracy_identity' not in results
  assert 'test_accuracy_orderings' not in results
