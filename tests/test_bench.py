"""`gpjax.bench.main`: every subcommand runs from its command line and writes its record,
also where the data stack (tfds, scikit-learn, tensorboardX) cannot be imported.

No timing assertions: `tests/test_bench_steps.py` and `tests/test_bench_probe.py` check
what each benchmark records.
"""

import json
import os
import subprocess
import sys

from gpjax import bench

ENVIRONMENT_FIELDS = ('command', 'date', 'jax_version', 'device_kind', 'platform',
                      'num_devices', 'settings', 'results')


def run_and_read(tmp_path, argv: list[str]) -> dict:
  """``bench.main(argv + ['--out', FILE])``'s record as read back from FILE (the same as
  the one returned)."""
  out = os.path.join(tmp_path, 'record.json')
  returned = bench.main(argv + ['--out', out])
  with open(out) as f:
    record = json.load(f)
  assert record == json.loads(json.dumps(returned))
  assert record['benchmark'] == argv[0]
  assert record['command'] == ' '.join(['python -m gpjax.bench', *argv, '--out', out])
  for field in ENVIRONMENT_FIELDS:
    assert field in record, field
  return record


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
tiny = ['--batch', '8', '--steps', '1', '--warmup', '1', '--width', '4', '--matmul-size', '0']
for command in ('train', 'eval'):
  bench.main([command, *tiny, '--dtype', 'float32', '--out', f'{sys.argv[1]}/{command}.json'])
bench.main(['canvas', *tiny[:6], '--grid', '2', '--matmul-size', '0',
            '--out', f'{sys.argv[1]}/canvas.json'])
bench.main(['probe', '--layer', '5', '--orderings', '2', '--images', '8', '--width', '4',
            '--repeats', '1', '--official-orderings', '1', '--official-batch', '8',
            '--out', f'{sys.argv[1]}/probe.json'])
bench.main(['seeds', '--seeds', '2', '--modes', 'sequential,unroll', '--width', '4',
            '--source-size', '8', '--batch', '8', '--steps', '1', '--warmup', '0', '--torch', 'off',
            '--out', f'{sys.argv[1]}/seeds.json'])
assert 'ml_collections' in sys.modules  # The step config: configs/location.py.
"""


def test_benchmarks_run_without_tfds_sklearn_or_tensorboardx(tmp_path, env):
  subprocess.run([sys.executable, '-c', WITHOUT_DATA_STACK, str(tmp_path)], check=True, env=env,
                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  for command in ('train', 'eval', 'canvas', 'probe', 'seeds'):
    with open(tmp_path / f'{command}.json') as f:
      assert json.load(f)['benchmark'] == command


def test_python_m_gpjax_bench_lists_every_subcommand(env):
  out = subprocess.run([sys.executable, '-m', 'gpjax.bench', '--help'], check=True, env=env,
                       capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
  assert out.startswith('usage: python -m gpjax.bench')
  assert '{probe,train,eval,canvas,seeds,xla}' in out
