"""The train/eval/canvas benchmarks run at a tiny size on CPU and record their numbers.

No timing assertions: only that every benchmark runs the real code path and
records positive numbers in the expected fields.
"""

import pytest
from test_bench import run_and_read

TINY = ['--config.batch=8', '--config.steps=2', '--config.warmup=1']
ROW_FIELDS = ('batch', 'dtype', 'seconds_per_step', 'seconds_per_step_all', 'images_per_s',
              'flops_per_step_per_device', 'flops_per_image', 'tflops_per_s',
              'utilisation_of_matmul_rate', 'compile_seconds', 'compiled_memory_bytes_per_device',
              'device_peak_memory_bytes_so_far')


@pytest.mark.parametrize('name', ['train', 'eval'])
def test_step_benchmarks(tmp_path, name):
  record = run_and_read(tmp_path, name, [*TINY, '--config.dtype=float32', '--config.width=4',
                                         '--config.matmul_size=0'])
  [row] = record['results']
  assert set(ROW_FIELDS) <= set(row)
  assert (row['batch'], row['dtype']) == (8, 'float32')
  for field in ('seconds_per_step', 'images_per_s', 'flops_per_step_per_device',
                'flops_per_image', 'tflops_per_s', 'compile_seconds',
                'compiled_memory_bytes_per_device'):
    assert row[field] > 0, field
  assert len(row['seconds_per_step_all']) == 2
  assert record['settings']['width'] == 4 and record['matmul_bf16_tflops_per_s'] is None
  assert record['config']['base']['model']['width'] == 64  # The step's width is config.width.


def test_canvas_benchmark_with_reference_matmul(tmp_path):
  record = run_and_read(tmp_path, 'canvas', [*TINY, '--config.grid=2',
                                             '--config.matmul_size=64'])
  [row] = record['results']
  assert row['images_per_s'] > 0 and row['seconds_per_step'] > 0
  assert record['matmul_bf16_tflops_per_s'] > 0
  assert row['utilisation_of_matmul_rate'] >= 0
  assert record['settings']['image_size'] == 64
