"""gpjax.studies.grid: the grid, resume and skip, evaluators per run, summaries over seeds (the
studies on it: test_location_study, test_augshift_study, test_segment_study)."""

import os
import threading
import time

import pytest

from configs import augshift_study as augshift_config
from configs import study as study_config
from gpjax.studies import grid as study
from gpjax.core import writers


def fake_train(trained):
  """A training function that records its runs and writes results.json like a real one, and
  empty checkpoint folders where a real one keeps checkpoints (``train.keep_at``, the last)."""
  def train_fn(run, run_dir):
    trained.append(os.path.basename(run_dir))
    for step in set(run.train.keep_at) | {run.train.steps}:
      if step <= run.train.steps:
        os.makedirs(os.path.join(run_dir, 'checkpoints', str(step)), exist_ok=True)
    results = {'test_accuracy': 0.5 + run.augshift.weight / 10 + run.seed / 100,
               'num_classes': 10}
    if run.model.head == 'permutenet':  # Tested under orderings: accuracy by layer.
      results['test_accuracy'] = 0.1 * run.model.permute_layer + run.seed / 100
      results['test_accuracy_identity'] = 0.9
    writers.write_json(os.path.join(run_dir, 'results.json'), results)
    return results
  return train_fn


def test_grid_sets_fields_and_seeds_cell_major():
  base = study_config.get_config().base
  runs = study.grid(base, [('a{seed}', {'model.width': 3}), ('b{seed}', {'task': 'semantic'})], 2)
  assert [n for n, _ in runs] == ['a0', 'a1', 'b0', 'b1']
  assert [r.seed for _, r in runs] == [base.seed, base.seed + 1] * 2
  assert [r.model.width for _, r in runs] == [3, 3, base.model.width, base.model.width]
  assert runs[2][1].task == 'semantic' and base.task == 'location'  # The base is untouched.


def test_location_grid_names_and_probe_cells():
  config = study_config.get_config()
  runs = study.run_configs(config)
  assert runs[0][0] == 'location_gapnet_zero_g3_s0' and len(runs) == 87
  plain = [n for n, r in runs if r.data.grid == 1]  # The semantic task on the plain image.
  assert plain == [f'semantic_{h}_zero_g1_s{s}' for h in ('gapnet', 'permutenet', 'linear')
                   for s in range(3)]
  runs = [(n, r) for n, r in runs if r.data.grid == 3]
  linear = [n for n, _ in runs if '_linear_' in n]  # Only the probed padding is added.
  assert linear == [f'{t}_linear_zero_g3_s{s}' for t in ('location', 'semantic') for s in range(3)]
  results = {n: {'test_accuracy': 0.5, 'num_classes': 10} for n, _ in runs}
  summary = study.summarize(runs, results)
  assert 'sweep_field' not in summary and 'sweep' not in summary['cells'][0]
  assert 'metrics' not in summary['cells'][0] and 'evaluations' not in summary
  table = study.markdown_table(summary)
  assert table.splitlines()[0] == ('| padding | g | location gapnet | location permutenet | '
                                   'location linear | semantic gapnet | semantic permutenet | '
                                   'semantic linear |')
  assert table.splitlines()[2].startswith('| zero | 3 | 50.0 ± 0.0 (n=3) |')
  assert 'Chance: location g=3 11.1%, semantic g=3 10.0%.' in table


def test_run_grid_evaluates_every_run_skips_finished_ones(tmp_path):
  config = augshift_config.get_config()
  config.study.seeds = 2
  config.study.sweep_values = (0.0, 0.5)
  sweep = study.parse_sweep(config.base, 'augshift.weight', config.study.sweep_values)
  runs = study.run_configs(config, sweep)
  trained, evaluated, seen = [], [], []

  def evaluate(name, run, run_dir):
    evaluated.append(name)
    assert run_dir == str(tmp_path / 'runs' / name) and os.path.isdir(run_dir)
    return {'consistency': 0.8 + run.augshift.weight / 5 + run.seed / 100}

  outcome = study.run_grid(runs, str(tmp_path), fake_train(trained), {'m': evaluate},
                           lambda name, i, n: seen.append((name, i, n)))
  names = ['semantic_linear_zero_g3_weight0_s0', 'semantic_linear_zero_g3_weight0_s1',
           'semantic_linear_zero_g3_weight0.5_s0', 'semantic_linear_zero_g3_weight0.5_s1']
  assert trained == evaluated == names and outcome.preempted is None
  assert seen == [(n, i, 4) for i, n in enumerate(names)]
  summary = study.summarize(runs, outcome.results, sweep, outcome.evaluations['m'])
  assert [c['sweep'] for c in summary['cells']] == [0.0, 0.5]
  c = summary['cells'][1]['metrics']['consistency']
  assert c['values'] == pytest.approx([0.9, 0.91]) and c['mean'] == pytest.approx(0.905)
  assert c['std'] == pytest.approx(0.005)
  assert summary['cells'][1]['accuracies'] == pytest.approx([0.55, 0.56])
  assert summary['cells'][1]['mean'] == pytest.approx(0.555)
  assert summary['evaluations'][names[3]]['consistency'] == pytest.approx(0.91)
  assert '| zero | 3 | 0.5 | 55.5 ± 0.5 (n=2) |' in study.markdown_table(summary)
  assert ('| semantic | linear | zero | 3 | 0.5 | 0.555 ± 0.005 | 0.905 ± 0.005 |'
          in study.metric_table(summary))
  again = study.run_grid(runs, str(tmp_path), fake_train(trained), {'m': evaluate})
  assert len(trained) == 4 and evaluated == names * 2  # Not retrained; evaluated again.
  assert again.results == outcome.results


def test_run_grid_stops_at_a_preempted_run(tmp_path):
  runs = study.grid(study_config.get_config().base, [('r{seed}', {})], 3)
  trained = []

  def train_fn(run, run_dir):
    trained.append(run.seed)
    return {'preempted_at_step': 7} if len(trained) == 2 else {'test_accuracy': 1.0}

  outcome = study.run_grid(runs, str(tmp_path), train_fn, {'m': lambda *a: {}})
  assert outcome.preempted == {'preempted_at_step': 7} and len(trained) == 2
  assert list(outcome.results) == ['r0', 'r1'] and list(outcome.evaluations['m']) == ['r0']


def test_run_grid_shares_cells_with_another_process(tmp_path):
  """A cell held by another process: 'help' leaves it; 'lead' does the free cells, waits for
  it and reads its results; the outcome keeps the runs' order."""
  runs = study.grid(study_config.get_config().base, [('a{seed}', {}), ('b{seed}', {}),
                                                      ('c{seed}', {})], 1)
  trained, held, release = [], threading.Event(), threading.Event()

  def holder():  # Another process: holds b0, trains it once told to, then lets go.
    with study.cell_lock(str(tmp_path), 'b0', wait=False) as mine:
      assert mine
      held.set()
      release.wait(30)
      time.sleep(0.3)
      fake_train(trained)(runs[1][1], str(tmp_path / 'runs' / 'b0'))

  thread = threading.Thread(target=holder)
  thread.start()
  held.wait(30)
  with study.cell_lock(str(tmp_path), 'b0', wait=False) as mine:
    assert not mine  # A lock of another open file: what another process sees.
  helped = study.run_grid(runs[:2], str(tmp_path), fake_train(trained), share='help')
  assert trained == ['a0'] and list(helped.results) == ['a0']
  release.set()
  led = study.run_grid(runs, str(tmp_path), fake_train(trained), share='lead')
  thread.join()
  assert sorted(trained) == ['a0', 'b0', 'c0'] and list(led.results) == ['a0', 'b0', 'c0']
  assert led.results['b0'] == {'test_accuracy': 0.5 + runs[1][1].seed / 100, 'num_classes': 10}
  with pytest.raises(ValueError, match="share='both' is not one of"):
    study.run_grid(runs, str(tmp_path), fake_train(trained), share='both')


def test_cached_or_computes_once(tmp_path):
  calls = []

  def compute():
    calls.append(1)
    result = {'x': 2.5}
    writers.write_json(str(tmp_path / 'results.json'), result)
    return result

  assert study.cached_or(str(tmp_path), compute) == {'x': 2.5}
  assert study.cached_or(str(tmp_path), compute) == {'x': 2.5} and len(calls) == 1


def test_over_steps_averages_the_curves_at_common_steps():
  """A cell's curve: mean and std over seeds at the steps every run evaluated."""
  runs = [{'curve': [{'step': 5, 'test_accuracy': 0.2}, {'step': 10, 'test_accuracy': 0.6}]},
          {'curve': [{'step': 5, 'test_accuracy': 0.4}, {'step': 7, 'test_accuracy': 0.5},
                     {'step': 10, 'test_accuracy': 0.8}]}]
  curve = study.over_steps(runs)
  assert curve['steps'] == [5, 10]
  assert curve['values'] == [[0.2, 0.6], [0.4, 0.8]]
  assert curve['mean'] == pytest.approx([0.3, 0.7]) and curve['std'] == pytest.approx([0.1, 0.1])
  assert study.over_steps(runs + [{'test_accuracy': 0.5}]) is None  # A run without a curve.
