"""The segmentation study: its grid of seeds, and the built-in study end to end at tiny
size (training, ranking, attacks, table, curves, rerun skipping finished steps)."""

import json
import os

import pytest

from configs import segmentation_study
from gpjax.studies import segmentation as segment_study
from gpjax.errors import ConfigError


def test_segment_study_grid_is_the_seeds():
  config = segmentation_study.get_config('tiny')
  config.study.seeds = 3
  runs = segment_study.runs(config)
  assert [n for n, _ in runs] == ['seed0', 'seed1', 'seed2']
  assert [r.seed for _, r in runs] == [config.base.seed + s for s in range(3)]
  config.study.seeds = 0
  with pytest.raises(ConfigError, match='study.seeds'):
    segment_study.check(config)


@pytest.fixture(scope='module')
def street_dir(builtin_dir):
  return builtin_dir('gpjax_street')


def test_tiny_study_end_to_end(street_dir, tmp_path):
  config = segmentation_study.get_config('tiny')
  with config.unlocked():
    config.study.seeds = 1
    config.base.data.data_dir = street_dir
    # ResNet-18 compiles in a third of ResNet-50's time; at width 16 it ends in the same
    # 128 channels as the tiny ResNet-50.
    config.base.model.backbone, config.base.model.width = 'resnet18', 16
    config.attack.probe.num_examples = config.base.eval.num_examples  # The 16 of evaluation.
    config.attack.probe.batch_size = 8
    config.attack.attack.random_draws = 2
    config.base.train.keep_at = (2,)  # Of 4 steps: attacked at steps 2 and 4.
  out = segment_study.run_study(config, str(tmp_path))
  for name in ('results.json', 'table.md', 'curves.png', 'runs/seed0/results.json',
               'runs/seed0/metrics.jsonl', 'attacks/seed0/results.json',
               'attacks/seed0/ranking.json', 'attacks/seed0/curves.png'):
    assert os.path.getsize(tmp_path / name) > 0, name
  with open(tmp_path / 'curves.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  with open(tmp_path / 'attacks/seed0/results.json') as f:
    attacked = json.load(f)
  with open(tmp_path / 'attacks/seed0/ranking.json') as f:
    ranking = json.load(f)
  c = attacked['num_channels']
  assert c == 128 and attacked['counts'] == [0, 10, 25, 50, 100]  # 200, 400 > C skipped.
  assert all(sorted(ranking[k]) == list(range(c)) for k in ('overall', 'left', 'right'))
  # The clean row is the trained model's own evaluation, exactly.
  assert attacked['clean']['whole'] == out['test_miou_per_seed'][0]
  assert out['table']['clean']['mean']['whole'] == attacked['clean']['whole']
  row = out['table']['top-N overall']['mean']
  assert row['left'] == attacked['top_overall']['left'][2]  # N = 25.
  table = (tmp_path / 'table.md').read_text()
  assert '| top-N left |' in table and '| random N |' in table
  # Over training: the kept step-2 checkpoint is attacked as well; the last table is the final.
  assert out['over_steps']['steps'] == [2, 4]
  assert out['over_steps']['tables'][-1] == out['table']
  early = json.loads((tmp_path / 'attacks/seed0_step2/results.json').read_text())
  assert out['over_steps']['tables'][0]['clean']['mean']['whole'] == early['clean']['whole']
  assert early['clean']['whole'] != attacked['clean']['whole']
  # Rerunning skips every finished step and gives the same results.
  assert segment_study.run_study(config, str(tmp_path))['table'] == out['table']
