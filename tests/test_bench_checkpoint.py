"""The checkpoint benchmark at a tiny size: both layouts timed in one record, each read back.
No timing assertions."""

import pytest
from test_bench import parse, run_and_read

from gpjax import bench
from gpjax.errors import ConfigError


def test_checkpoint_benchmark_times_both_layouts(tmp_path):
  record = run_and_read(tmp_path, 'checkpoint', ['--config.width=4', '--config.repeats=2'])
  rows = record['results']
  assert [r['layout'] for r in rows] == ['leaf', 'packed']
  for r in rows:
    assert len(r['save_seconds_all']) == len(r['restore_seconds_all']) == 2
    assert r['seconds_per_save'] > 0 and r['seconds_per_restore'] > 0
    assert r['save_speedup'] == rows[0]['seconds_per_save'] / r['seconds_per_save']
  assert rows[0]['save_speedup'] == rows[0]['restore_speedup'] == 1.0
  # Adam's state: params, mu and nu of every parameter, the BatchNorm statistics, 3 counters.
  assert record['settings']['num_arrays'] > 200 and record['settings']['optimizer'] == 'adam'


@pytest.mark.parametrize('override,match', [
    ('--config.layouts=("leaf","zip")', r"config.layouts\[1\]='zip' is not allowed"),
    ('--config.layouts=("packed","packed")', r"name each layout once"),
    ('--config.repeats=0', r'config.repeats=0'),
])
def test_mistakes_are_named(tmp_path, override, match):
  parsed, _ = parse('checkpoint', tmp_path, [override])
  with pytest.raises(ConfigError, match=match):
    bench.check(parsed.config)
