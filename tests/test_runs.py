"""Loading a trained run: load_run gives the saved config, the model of the run and the newest
checkpoint's variables; provenance names the source; accumulate sums over batches."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import attack, permutation_probe
from gpjax.core import checkpoint
from gpjax.tasks import runs


@pytest.fixture(scope='module')
def trained(tmp_path_factory, data_dir):
  """A tiny location run trained for 2 steps (checkpoint at step 2)."""
  from conftest import train_tiny  # Not at the top: other processes import test modules.
  return train_tiny(tmp_path_factory, data_dir, 'linear')


def test_load_run_gives_the_runs_config_model_and_newest_variables(trained):
  run = runs.load_run(trained)
  config, model, variables, info = run.config, run.model, run.variables, run.info
  with open(os.path.join(trained, 'config.json')) as f:
    assert config.to_dict() == json.load(f)
  assert info.step == 2 and info.workdir == trained and info.num_classes == 4  # 2x2 cells.
  assert info.data_dir == config.data.data_dir and info.data.image_shape == (32, 32, 3)
  assert model.head == 'linear' and model.num_classes == 4 and model.bn_axis_name is None
  assert model.dtype == jnp.float32
  raw = checkpoint.restore_raw(trained)
  assert set(variables) == {'params', 'batch_stats'}
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(
      {'params': raw['params'], 'batch_stats': raw['batch_stats']})):
    np.testing.assert_array_equal(a, b)
  # The model applies to the run's canvases: (n, 64, 64, 3) -> logits (n, 4).
  logits, _ = model.apply(variables, np.zeros((2, 64, 64, 3), np.float32), train=False)
  assert logits.shape == (2, 4)
  half = runs.load_run(trained, 'bfloat16').model
  assert half.dtype == jnp.bfloat16


def test_load_source_of_a_workdir_is_load_run(trained):
  source = attack.get_config().source
  source.workdir = trained
  run = runs.load_source(source, 'float32')
  assert run.config.model.head == 'linear' and run.model.num_classes == 4 and run.info.step == 2
  source.step = 2  # The same checkpoint by its step; one the run lacks is refused.
  assert runs.load_source(source, 'float32').info.step == 2
  source.step = 1
  with pytest.raises(FileNotFoundError, match='holds no checkpoint at step 1'):
    runs.load_source(source, 'float32')


def test_provenance_names_the_source(trained, tmp_path):
  probe = permutation_probe.get_config()
  run = runs.load_run(trained)
  config = run.config
  out = runs.provenance(probe, run)
  with open(os.path.join(trained, 'results.json')) as f:
    accuracy = json.load(f)['test_accuracy']
  assert out['checkpoint_step'] == 2 and out['source_test_accuracy'] == accuracy
  assert out['source_workdir'] == trained and out['source_config'] == config.to_dict()
  assert out['config'] == probe.to_dict() and out['num_devices'] == jax.device_count()
  assert out['jax_version'] == jax.__version__
  bare = runs.provenance(probe, None)
  assert set(bare) == {'config', 'device_kind', 'num_devices', 'jax_version'}
  moved = runs.RunInfo(num_classes=4, step=1, workdir=str(tmp_path), data_dir=None, data=None)
  moved_run = runs.Run(config, run.model, run.variables, moved)
  assert runs.provenance(probe, moved_run)['source_test_accuracy'] is None  # No results.json.

