"""The seeds benchmark at a tiny size on CPU: every mode timed against sequential in one
record, the PyTorch step beside it, and a real cell whose unrolled runs equal the sequential
ones. No timing assertions."""

from test_bench import run_and_read

from configs import study as study_config
from gpjax.core import multirun
from gpjax.bench import seeds


def test_seeds_benchmark_records_every_mode_the_torch_step_and_a_cell(tmp_path, monkeypatch):
  make_study = study_config.get_config

  def small_study(size):  # The CPU study's cell at width 4 on 8x8 sources: faster compiles.
    config = make_study(size)
    config.base.model.width, config.base.data.image_size = 4, 8
    return config

  monkeypatch.setattr(seeds.study_config, 'get_config', small_study)
  record = run_and_read(tmp_path, ['seeds', '--seeds', '2', '--width', '4', '--source-size', '8',
                                   '--batch', '8', '--steps', '2', '--warmup', '1',
                                   '--cell-steps', '2'])
  rows = record['results']
  assert [r['mode'] for r in rows] == list(multirun.MODES[1:])
  assert rows[0]['speedup_vs_sequential'] == 1.0
  for r in rows:
    assert r['seconds_per_group_step'] > 0 and len(r['seconds_per_group_step_all']) == 2
    assert r['images_per_s'] == 2 * 8 / r['seconds_per_group_step']
    assert r['speedup_vs_sequential'] == (rows[0]['seconds_per_group_step']
                                          / r['seconds_per_group_step'])
  torch = record['torch']
  assert torch['seconds_per_step'] > 0 and torch['threads'] >= 1
  assert torch['gpjax_speed_over_torch'] == (torch['seconds_per_step']
                                             / torch['gpjax_seconds_per_step'])
  cell = record['cell']
  assert (cell['steps'], cell['width'], cell['batch']) == (2, 4, 32)
  sequential, unrolled = cell['results']
  assert (sequential['mode'], unrolled['mode']) == ('sequential', 'unroll')
  assert unrolled['equal_to_sequential'] and len(set(sequential['test_losses'])) == 2  # 2 seeds.
  assert record['settings']['canvas_size'] == 24
