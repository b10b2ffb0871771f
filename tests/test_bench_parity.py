"""`gpjax.bench.parity` end to end at toy size: both sides' curves, the table and the figure;
the shares (`parity.shares`) on numbers given."""

import os

import pytest

from configs.bench import parity as parity_config
from gpjax.core import writers
from gpjax.errors import ConfigError

pytest.importorskip('torch')
parity = pytest.importorskip('gpjax.bench.parity')


def _toy_config(data_dir):
  config = parity_config.get_config()
  with config.unlocked():
    config.tasks, config.heads = ('location',), ('gapnet',)  # One gpjax child: its start costs.
    config.data.image_size, config.data.grid, config.data.data_dir = 8, 2, data_dir
    config.width, config.batch_size, config.steps, config.eval_at = 4, 8, 4, (2, 4)
    config.official.test_passes, config.official.threads = 2, 1
  return config


def test_side_by_side_writes_both_curves_the_table_and_the_figure(tmp_path, env, monkeypatch,
                                                                 builtin_dir):
  for key, value in env.items():  # The gpjax child: CPU, a shared compile cache.
    monkeypatch.setenv(key, value)
  workdir = str(tmp_path / 'parity')
  results = parity.run(_toy_config(builtin_dir('gpjax_digits')), workdir)
  assert writers.read_json(os.path.join(workdir, 'results.json'))['curves'] == results['curves']
  for side in parity.SIDES:
    curve = results['curves'][side]['location']['gapnet']
    assert [r['step'] for r in curve] == [2, 4]
    assert all(0.0 <= r['test_accuracy'] <= 1.0 for r in curve)
    assert results['shares'][side] == {}  # No PermuteNet: no share.
  assert results['chance'] == {'location': 0.25}
  table = open(os.path.join(workdir, 'table.md')).read()
  gapnet_row = next(line for line in table.splitlines() if line.startswith('| gapnet |'))
  cells = [f'{100 * r["test_accuracy"]:.1f}' for side in parity.SIDES
           for r in results['curves'][side]['location']['gapnet']]
  assert gapnet_row == f'| gapnet | location | {" | ".join(cells)} |'
  assert os.path.getsize(os.path.join(workdir, 'accuracy_over_steps.png')) > 1000
  with pytest.raises(FileExistsError, match='results.json exists'):
    parity.run(_toy_config(builtin_dir('gpjax_digits')), workdir)


@pytest.mark.parametrize('field,value,match', [
    ('tasks', ('location', 'size'), r"config.tasks='size' is not allowed"),
    ('heads', ('gapnet', 'gapnet'), r"config.heads=\('gapnet', 'gapnet'\) is not allowed; give"),
    ('eval_at', (2, 3), r'config.eval_at=\(2, 3\) is not allowed; .* ending at config.steps'),
    ('permute_layer', 6, r'config.permute_layer=6 is not allowed')])
def test_a_bad_field_is_named_in_one_line(field, value, match):
  config = _toy_config('')
  with config.unlocked():
    config[field] = value
  with pytest.raises(ConfigError, match=match):
    parity.validate(config)


def test_share_is_permutenets_part_of_gapnets_above_chance_accuracy():
  curves = {'location': {'gapnet': [{'step': 4, 'test_accuracy': 0.85}],
                         'permutenet': [{'step': 4, 'test_accuracy': 0.40}]},
            'semantic': {'gapnet': [{'step': 4, 'test_accuracy': 0.10}],
                         'permutenet': [{'step': 4, 'test_accuracy': 0.30}]}}
  shares = parity.shares(curves, {'location': 0.25, 'semantic': 0.1})
  assert shares == {'location': pytest.approx(0.25), 'semantic': None}
