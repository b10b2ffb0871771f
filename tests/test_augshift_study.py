"""The AugShift study: the grid with its lambda sweep, the invariance measures of every run
(cached), its files; training and the measures faked (the real ones: test_reproduce)."""

import os

import numpy as np
import pytest
from test_grid import fake_train

from configs import augshift_study as augshift_config
from gpjax.studies import augshift as augshift_study
from gpjax.core import writers
from gpjax.probes import runner
from gpjax.errors import ConfigError


def test_augshift_study_measures_every_run(monkeypatch, tmp_path):
  config = augshift_config.get_config()
  config.study.seeds, config.study.sweep_values = 2, (0.0, 1.0)
  config.base.train.steps, config.base.train.keep_at = 20, (5, 20, 40)  # 20: the last; 40: never.
  metrics = dict.fromkeys(augshift_study.METRICS, 0.25)
  measured = []

  def fake_measure(probe, out_dir):
    """Consistency: the run's test accuracy at its last checkpoint, 0.1 less before."""
    v = probe.invariance
    measured.append((os.path.basename(v.source_workdir), v.source_step))
    run = writers.read_json(os.path.join(v.source_workdir, 'results.json'))
    consistency = run['test_accuracy'] - (0.1 if v.source_step else 0.0)
    result = {**metrics, 'consistency': consistency, 'other': [1, 2],
              'accuracy_vs_shift': {'offsets': [[8, 0], [8, 8]], 'accuracy': [0.5, 0.7]}}
    os.makedirs(out_dir)
    writers.write_json(os.path.join(out_dir, 'results.json'), result)
    return result

  trained = []
  config.study.train_seeds = 'sequential'  # One run at a time: the faked training.
  monkeypatch.setattr(augshift_study.classification, 'train_and_evaluate', fake_train(trained))
  monkeypatch.setattr(runner, 'run_probe',
                      lambda _, probe, out_dir: fake_measure(probe, out_dir))
  summary = augshift_study.run_study(config, str(tmp_path))
  # 2 lambdas x 2 seeds, then standard training (one copy, lambda 0) for each seed.
  assert trained[4:] == [f'semantic_linear_zero_g3_standard_s{s}' for s in range(2)]
  assert summary['sweep_field'] == 'augshift.weight' and len(summary['evaluations']) == 6
  (standard,) = summary['standard']
  assert standard['metrics']['consistency']['values'] == pytest.approx([0.5, 0.51])
  assert 'Standard training (one canvas per image' in (tmp_path / 'table.md').read_text()
  assert set(summary['evaluations']['semantic_linear_zero_g3_weight1_s1']) == set(
      augshift_study.METRICS)
  assert summary['cells'][1]['metrics']['consistency']['values'] == pytest.approx([0.6, 0.61])
  # Over training: the checkpoint kept at step 5, then the last (step 0 to the probe: newest).
  assert measured[:2] == [('semantic_linear_zero_g3_weight0_s0', 5),
                          ('semantic_linear_zero_g3_weight0_s0', 0)]
  curve = summary['cells'][1]['metric_curves']['consistency']
  assert curve['steps'] == [5, 20]
  assert np.allclose(curve['values'], [[0.5, 0.6], [0.51, 0.61]])
  assert standard['metric_curves']['consistency']['mean'] == pytest.approx([0.405, 0.505])
  assert os.path.isdir(tmp_path / 'runs/semantic_linear_zero_g3_weight1_s1/invariance_step5')
  for name in ('accuracy.png', 'metrics.png', 'accuracy_vs_shift.png', 'table.md'):
    assert os.path.getsize(tmp_path / name) > 0, name
  monkeypatch.setattr(runner, 'run_probe', None)  # Cached: neither measured nor trained again.
  monkeypatch.setattr(augshift_study.classification, 'train_and_evaluate', None)
  assert augshift_study.run_study(config, str(tmp_path)) == summary
  config.evaluator.invariance.num_pairs = 0
  with pytest.raises(ConfigError, match='evaluator.invariance.num_pairs'):
    augshift_study.check(config)
