"""The XLA-options benchmark at a tiny size on CPU: each setting in its own process, its ratio
to the defaults of the same run, the loss it gives, a flag XLA rejects recorded as the error
it gave. No timing assertions."""

import json

import pytest
from test_bench import run_and_read


def test_xla_benchmark_compares_settings_with_the_defaults(tmp_path):
  fast_math, bad = '--xla_cpu_enable_fast_math=true', '--xla_cpu_no_such_flag=1'
  record = run_and_read(tmp_path, 'xla', [
      '--config.width=4', '--config.source_size=8', '--config.batch=8,16', '--config.steps=2',
      '--config.warmup=1', '--config.rounds=1', '--config.torch=off',
      f"--config.settings=('', '{fast_math}', '{bad}')"])
  rows = record['results']
  assert [(r['setting'], r.get('batch')) for r in rows] == [
      ('', 8), ('', 16), (fast_math, 8), (fast_math, 16), (bad, None)]
  for r in rows[:4]:
    assert len(r['seconds_per_step_per_round']) == 1 and r['seconds_per_step'] > 0
    assert r['images_per_s'] == pytest.approx(r['batch'] / r['seconds_per_step'])
    assert r['speed_over_baseline'] == pytest.approx(
        rows[r['batch'] == 16]['seconds_per_step'] / r['seconds_per_step'])
    assert r['final_loss'] > 0
  assert rows[0]['speed_over_baseline'] == 1.0 and rows[0]['loss_change'] == 0.0
  assert rows[2]['loss_change'] == rows[2]['final_loss'] - rows[0]['final_loss']
  assert 'xla_cpu_no_such_flag' in rows[4]['error']
  assert 'torch' not in record and record['settings']['canvas_size'] == 24
  with open(tmp_path / 'children' / '1_r0' / 'train.json') as f:  # fast_math's child record.
    child = json.load(f)
  assert [r['final_loss'] for r in child['results']] == [rows[2]['final_loss'],
                                                        rows[3]['final_loss']]
