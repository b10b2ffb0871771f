"""gpjax.studies.location: the location study on the grid runner with training and probes faked
(the real ones: test_reproduce)."""

import os

import pytest

from configs import study as study_config
from gpjax.core import writers
from gpjax.probes import runner
from gpjax.studies import location
from gpjax.tasks import classification
from test_grid import fake_train


def test_location_study_probes_only_unpermuted_runs(monkeypatch, tmp_path):
  config = study_config.get_config()
  config.study.tasks, config.study.paddings, config.study.seeds = ('location',), ('zero',), 2
  config.study.probe_layers = (4, 5)
  config.study.layer_protocol, config.study.plain_heads = (), ()
  probed = []

  def fake_probe(_, probe, out_dir):
    probed.append((os.path.basename(probe.probe.source_workdir), probe.probe.layer))
    return {'accuracy_identity': 0.5, 'summary': {'mean': 0.1 * probe.probe.layer},
            'chance': 1 / 9}

  config.study.train_seeds = 'sequential'  # One run at a time: the faked training.
  monkeypatch.setattr(classification, 'train_and_evaluate', fake_train([]))
  monkeypatch.setattr(runner, 'run_probe', fake_probe)
  summary = location.run_study(config, str(tmp_path))
  assert probed == [('location_linear_zero_g3_s0', 4), ('location_linear_zero_g3_s0', 5),
                    ('location_linear_zero_g3_s1', 4), ('location_linear_zero_g3_s1', 5)]
  assert [(r['head'], r['layer'], r['seeds']) for r in summary['probes']] == [
      ('linear', 4, 2), ('linear', 5, 2)]
  assert summary['probes'][1]['retained'] == pytest.approx(1.0)
  table = (tmp_path / 'table.md').read_text()
  assert '| location | linear | zero | 3 | 4 | 50.0 | 40.0 ± 0.0 | 80% |' in table
  assert writers.read_json(tmp_path / 'results.json') == summary
  assert (tmp_path / 'accuracy.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_layer_protocol_trains_permutenets_per_layer(monkeypatch, tmp_path):
  """The paper's protocol: a PermuteNet per layer (layer 5 = the grid's own PermuteNet run,
  trained once), its table and figure beside the grid's; accuracies read from each run."""
  config = study_config.get_config()
  config.study.tasks, config.study.paddings = ('location', 'semantic'), ('zero',)
  config.study.seeds = 2
  config.study.probe_heads, config.study.layer_protocol = (), (2, 5)
  config.study.plain_heads = ()
  trained = []
  config.study.train_seeds = 'sequential'  # One run at a time: the faked training.
  monkeypatch.setattr(classification, 'train_and_evaluate', fake_train(trained))
  summary = location.run_study(config, str(tmp_path))
  assert len(trained) == len(set(trained)) == 12  # 2 tasks x (gapnet, permutenet, layer 2) x 2.
  assert 'location_permutenet_zero_g3_layer2_s1' in trained
  assert not any('layer5' in n for n in trained)
  rows = {(r['task'], r['layer']): r for r in summary['layer_protocol']}
  assert list(rows) == [('location', 2), ('location', 5), ('semantic', 2), ('semantic', 5)]
  loc2 = rows['location', 2]
  assert loc2['accuracies'] == pytest.approx([0.2, 0.21]) and loc2['identity_mean'] == 0.9
  # kept = (PermuteNet - chance) / (GAPNet - chance); fake GAPNet: 0.5 + seed / 100.
  assert loc2['gapnet_mean'] == pytest.approx(0.505)
  assert loc2['kept'] == pytest.approx((0.205 - 1 / 9) / (0.505 - 1 / 9))
  # The grid's PermuteNet cell is the layer-5 row: the same runs.
  cell = next(c for c in summary['cells'] if c['head'] == 'permutenet' and c['task'] == 'location')
  assert rows['location', 5]['accuracies'] == cell['accuracies']
  table = (tmp_path / 'table.md').read_text()
  assert '| location | 3 | 2 | 20.5 ± 0.5 (n=2) | 90.0 | 50.5 | 24% |' in table
  assert "The paper's protocol" in table
  assert (tmp_path / 'layer_protocol.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
