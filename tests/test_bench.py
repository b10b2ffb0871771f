"""The train/eval/canvas/probe benchmarks run at a tiny size on CPU and write their records.

No timing assertions: only that every subcommand runs the real code path and
records positive numbers in the expected fields.
"""

import json
import os
import subprocess
import sys

import pytest

from gpjax import bench

TINY = ['--batch', '8', '--steps', '2', '--warmup', '1']
ROW_FIELDS = ('batch', 'dtype', 'seconds_per_step', 'seconds_per_step_all', 'images_per_s',
              'flops_per_step_per_device', 'flops_per_image', 'tflops_per_s',
              'utilisation_of_matmul_rate', 'compile_seconds', 'compiled_memory_bytes_per_device',
              'device_peak_memory_bytes_so_far')


def _run(tmp_path, argv):
  out = os.path.join(tmp_path, 'record.json')
  returned = bench.main(argv + ['--out', out])
  with open(out) as f:
    record = json.load(f)
  assert record['benchmark'] == argv[0] == returned['benchmark']
  for field in ('jax_version', 'device_kind', 'platform', 'num_devices', 'settings', 'results'):
    assert field in record, field
  return record


@pytest.mark.parametrize('command', ['train', 'eval'])
def test_step_benchmarks(tmp_path, command):
  record = _run(tmp_path, [command, *TINY, '--dtype', 'float32', '--width', '4',
                           '--matmul-size', '0'])
  [row] = record['results']
  assert set(ROW_FIELDS) <= set(row)
  assert (row['batch'], row['dtype']) == (8, 'float32')
  for field in ('seconds_per_step', 'images_per_s', 'flops_per_step_per_device',
                'flops_per_image', 'tflops_per_s', 'compile_seconds',
                'compiled_memory_bytes_per_device'):
    assert row[field] > 0, field
  assert len(row['seconds_per_step_all']) == 2
  assert record['settings']['width'] == 4 and record['matmul_bf16_tflops_per_s'] is None


def test_canvas_benchmark_with_reference_matmul(tmp_path):
  record = _run(tmp_path, ['canvas', *TINY, '--grid', '2', '--matmul-size', '64'])
  [row] = record['results']
  assert row['images_per_s'] > 0 and row['seconds_per_step'] > 0
  assert record['matmul_bf16_tflops_per_s'] > 0
  assert row['utilisation_of_matmul_rate'] >= 0
  assert record['settings']['image_size'] == 64


def test_probe_still_runs(tmp_path):
  record = _run(tmp_path, ['probe', '--layer', '5', '--orderings', '4', '--images', '8',
                           '--width', '4', '--dtype', 'float32', '--repeats', '1',
                           '--official-orderings', '1', '--official-batch', '8'])
  assert record['results']['probe_orderings_per_s'] > 0


# Runs every benchmark with the data stack that the offline GPU machines lack made unimportable
# (ml-collections they install from launch/wheels: the step config is configs/location.py's).
WITHOUT_DATA_STACK = """
import sys
class Block:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow_datasets', 'tensorflow', 'tensorboardX', 'sklearn',
                              'array_record'):
      raise ImportError(f'{name} is blocked')
sys.meta_path.insert(0, Block())
from gpjax import bench
tiny = ['--batch', '8', '--steps', '1', '--warmup', '1', '--width', '4', '--matmul-size', '0']
for command in ('train', 'eval'):
  bench.main([command, *tiny, '--dtype', 'float32', '--out', f'{sys.argv[1]}/{command}.json'])
bench.main(['canvas', *tiny[:6], '--grid', '2', '--matmul-size', '0',
            '--out', f'{sys.argv[1]}/canvas.json'])
bench.main(['probe', '--layer', '5', '--orderings', '2', '--images', '8', '--width', '4',
            '--repeats', '1', '--official-orderings', '1', '--official-batch', '8',
            '--out', f'{sys.argv[1]}/probe.json'])
assert 'ml_collections' in sys.modules  # The step config: configs/location.py.
"""


def test_benchmarks_run_without_tfds_sklearn_or_tensorboardx(tmp_path, env):
  subprocess.run([sys.executable, '-c', WITHOUT_DATA_STACK, str(tmp_path)], check=True, env=env,
                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  for command in ('train', 'eval', 'canvas', 'probe'):
    with open(tmp_path / f'{command}.json') as f:
      assert json.load(f)['benchmark'] == command
