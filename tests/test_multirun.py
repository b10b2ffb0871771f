"""gpjax.core.multirun: the seeds of a config trained in one program give each run's numbers as
separate runs (params, metrics, curves), also across a resume mid-run; study grids hand
their cells to it."""

import copy
import json
import os

import jax
import numpy as np
import pytest
from test_classification import micro_config, read_rows

from configs import study as study_config
from gpjax.core import checkpoint
from gpjax.core import loop
from gpjax.core import multirun
from gpjax.studies import grid as study
from gpjax.studies import location
from gpjax.core import trainer
from gpjax.core import writers
from gpjax.tasks import classification
from gpjax.errors import ConfigError

SEEDS = (0, 5)


def _configs(data_dir):
  """Two PermuteNet runs (one fresh ordering per step from each run's own key), 6 steps."""
  base = micro_config(data_dir, train__steps=6, train__eval_every=6, train__eval_at=(3,),
                      train__checkpoint_every=3, train__log_every=2)
  base.model.head = 'permutenet'
  base.eval.orderings = 2
  configs = []
  for seed in SEEDS:
    config = copy.deepcopy(base)
    config.seed = seed
    configs.append(config)
  return configs


def _outputs(workdir):
  """What a run leaves: results.json, metrics.jsonl rows and the final params."""
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  return results, read_rows(workdir), checkpoint.restore_raw(workdir)['params']


@pytest.fixture(scope='module')
def separate(data_dir, tmp_path_factory):
  """Each seed trained alone: the reference."""
  root = tmp_path_factory.mktemp('separate')
  outs = []
  for i, config in enumerate(_configs(data_dir)):
    trainer.train_and_evaluate(config, str(root / f'r{i}'), classification.TASK)
    outs.append(_outputs(str(root / f'r{i}')))
  return outs


def _assert_params_close(got, want, rtol):
  """Exactly equal for rtol 0. Else the parameter vectors within 10 x rtol of each other
  relative to their size (L2): Adam's m / sqrt(v) scales each update to about the learning
  rate whatever the gradient's size, so the rounding of small gradients (other summation
  orders in the vmapped group's grouped convolutions) moves single parameters by a share of a
  step (measured after 6 steps on a 2-core AMD EPYC: 1.1% of them more than 1e-4 apart, one by
  1.1e-3; an Intel Xeon kept all within 1e-4), while the whole vector stays close; runs that
  trained on other data or keys differ in every parameter, and in loss."""
  got, want = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)]) for t in (got, want))
  if rtol == 0:
    np.testing.assert_array_equal(got, want)
    return
  distance = np.linalg.norm(got - want) / np.linalg.norm(want)
  assert distance <= 10 * rtol, distance  # 3.1e-4 measured on the EPYC.


def _assert_equal_runs(group_dirs, separate, rtol):
  """Each run of the group against its separate run: exactly for rtol 0; else losses within
  rtol, params as `_assert_params_close` says, and accuracies within 1e-3, four of the 4,000
  predictions a test counts (2,000 canvases x 2 orderings): a prediction at a near-tie of two
  logits can flip with the last bits of a sum."""
  accuracy_tol = 0.0 if rtol == 0 else 1e-3
  for workdir, (results, rows, params) in zip(group_dirs, separate):
    got_results, got_rows, got_params = _outputs(workdir)
    assert got_results['config'] == results['config']
    assert got_results['test_loss'] == pytest.approx(results['test_loss'], rel=rtol, abs=rtol)
    assert got_results['best_step'] == results['best_step']
    for key in ('test_accuracy', 'test_accuracy_identity'):
      assert got_results[key] == pytest.approx(results[key], abs=accuracy_tol), key
    assert [r['step'] for r in got_results['curve']] == [3, 6]
    for got, want in zip(got_results['curve'], results['curve']):
      assert got['test_accuracy'] == pytest.approx(want['test_accuracy'], abs=accuracy_tol)
    assert [(r['step'], r['split']) for r in got_rows] == [(r['step'], r['split']) for r in rows]
    for got, want in zip(got_rows, rows):
      if got['split'] == 'train':
        assert got['loss'] == pytest.approx(want['loss'], rel=rtol, abs=rtol)
    # The curve in results.json is the test rows of metrics.jsonl.
    tests = [r for r in got_rows if r['split'] == 'test']
    assert [c['test_accuracy'] for c in got_results['curve']] == [
        r['test_accuracy'] for r in tests]
    _assert_params_close(got_params, params, rtol)


@pytest.mark.parametrize('mode, rtol', [
    ('interleave', 0.0), pytest.param('unroll', 0.0, marks=pytest.mark.product_emitters),
    ('vmap', 1e-4)])
def test_runs_trained_together_equal_separate_runs(separate, data_dir, tmp_path, mode, rtol):
  """Interleaved (the separate runs' program) and unrolled: the same numbers exactly;
  vmapped: within float tolerance."""
  dirs = [str(tmp_path / f'r{i}') for i in range(len(SEEDS))]
  results = multirun.train_group(_configs(data_dir), dirs, classification.TASK, mode)
  assert [r['config']['seed'] for r in results] == list(SEEDS)
  assert results[0]['test_accuracy'] != results[1]['test_accuracy']  # Different seeds.
  _assert_equal_runs(dirs, separate, rtol)


def test_a_group_preempted_mid_run_resumes_to_the_same_numbers(separate, data_dir, tmp_path,
                                                                monkeypatch):
  """SIGTERM after step 4 (the newest checkpoint: step 3): both runs save step 4 and stop; the
  rerun continues from there and ends as the separate runs."""
  dirs = [str(tmp_path / f'r{i}') for i in range(len(SEEDS))]
  monkeypatch.setattr(loop._Preemption, 'reached', lambda self, step: step == 4)
  out = multirun.train_group(_configs(data_dir), dirs, classification.TASK, 'vmap')
  assert out == [{'preempted_at_step': 4}] * 2
  for workdir in dirs:
    assert sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints'))) == [3, 4]
  monkeypatch.undo()
  multirun.train_group(_configs(data_dir), dirs, classification.TASK, 'vmap')
  _assert_equal_runs(dirs, separate, 1e-4)


def test_restore_common_takes_the_newest_step_every_run_holds(tmp_path):
  state = {'w': np.zeros(3, np.float32)}
  managers = [checkpoint.make_manager(str(tmp_path / name), 5) for name in ('a', 'b')]
  for manager, steps in zip(managers, ([2, 4], [2])):
    for step in steps:
      checkpoint.save(manager, step, {'w': np.full(3, step, np.float32)}, {})
    manager.wait_until_finished()
  states, step = checkpoint.restore_common(managers, [state, state])
  assert step == 2 and [float(s['w'][0]) for s in states] == [2.0, 2.0]
  fresh = checkpoint.make_manager(str(tmp_path / 'c'), 5)
  assert checkpoint.restore_common([managers[0], fresh], [state, state]) is None
  for manager in managers + [fresh]:
    manager.close()


def test_groups_must_differ_in_seed_only(data_dir):
  configs = _configs(data_dir)
  configs[1].model.width = 8
  with pytest.raises(ConfigError, match=r"differ in seed only; these differ in \['model'\]"):
    multirun.check_group(configs)
  configs = _configs(data_dir)
  configs[1].seed = configs[0].seed
  with pytest.raises(ConfigError, match='distinct seeds'):
    multirun.check_group(configs)


def test_auto_is_interleave_on_cpu_and_bad_modes_are_named():
  assert jax.default_backend() == 'cpu' and multirun.resolve('auto') == 'interleave'
  assert multirun.resolve('vmap') == 'vmap'
  with pytest.raises(ConfigError, match=r"study.train_seeds='pmap' is not one of"):
    multirun.resolve('pmap')
  config = study_config.get_config()
  config.study.train_seeds = 'pmap'
  with pytest.raises(ConfigError, match='train_seeds'):
    location.check(config)


def test_run_grid_trains_the_unfinished_seeds_of_each_cell_together(tmp_path):
  base = study_config.get_config().base
  runs = study.grid(base, [('a{seed}', {}), ('b{seed}', {'model.width': 3})], 3)
  os.makedirs(tmp_path / 'runs' / 'a1')
  writers.write_json(str(tmp_path / 'runs' / 'a1' / 'results.json'), {'test_accuracy': 0.1})
  calls = []

  def train_fn(run, run_dir):
    calls.append([os.path.basename(run_dir)])
    return {'test_accuracy': run.seed / 10}

  def train_cell(runs_, dirs):
    calls.append([os.path.basename(d) for d in dirs])
    assert len({r.model.width for r in runs_}) == 1
    return [{'test_accuracy': r.seed / 10} for r in runs_]

  evaluated = []
  outcome = study.run_grid(runs, str(tmp_path), train_fn,
                           {'e': lambda name, run, run_dir: evaluated.append(name) or {}},
                           train_cell=train_cell)
  assert calls == [['a0', 'a2'], ['b0', 'b1', 'b2']]
  assert evaluated == ['a0', 'a1', 'a2', 'b0', 'b1', 'b2']
  assert outcome.results['a1'] == {'test_accuracy': 0.1}
  assert outcome.results['b2'] == {'test_accuracy': (base.seed + 2) / 10}
