"""`gpjax.bench`: every benchmark runs from its config and writes its record in the workdir,
also where scikit-learn and tensorboardX cannot be imported; a config
mistake or an existing record stops the command with one line before any work.

No timing assertions: `tests/test_bench_steps.py` and `tests/test_bench_probe.py` check
what each benchmark records.
"""

import importlib
import json
import os
import re
import subprocess
import sys

import pytest
from absl import flags

from gpjax import bench
from gpjax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, 'configs', 'bench')
ENVIRONMENT_FIELDS = ('command', 'date', 'jax_version', 'device_kind', 'platform',
                      'num_devices', 'settings', 'results', 'config')


def parse(name: str, workdir, overrides: list[str]) -> tuple[flags.FlagValues, list[str]]:
  """``--config=configs/bench/NAME.py --workdir=DIR OVERRIDES`` parsed into private flags;
  returns them and the arguments."""
  argv = [f'--config={os.path.join(CONFIGS, name)}.py', f'--workdir={workdir}', *overrides]
  flag_values = flags.FlagValues()
  bench.define_flags(flag_values, ['gpjax.bench', *argv])
  bench.parse_flags(['gpjax.bench', *argv], flag_values)
  return flag_values, argv


def run_and_read(tmp_path, name: str, overrides: list[str]) -> dict:
  """``bench.run``'s record of benchmark NAME as read back from tmp_path/NAME.json (the same
  as the one returned)."""
  parsed, argv = parse(name, tmp_path, overrides)
  returned = bench.run(parsed.config, parsed.workdir, argv)
  with open(os.path.join(tmp_path, f'{name}.json')) as f:
    record = json.load(f)
  assert record == json.loads(json.dumps(returned))
  assert record['benchmark'] == name
  assert record['command'] == ' '.join(['python -m gpjax.bench', *argv])
  for field in ENVIRONMENT_FIELDS:
    assert field in record, field
  return record


# Runs every benchmark with scikit-learn and tensorboardX made unimportable: what a benchmark
# needs of the stack is what training needs (launch/wheels), no more. (Not `checkpoint`: Orbax
# asks importlib whether TensorFlow is installed, which this block answers with an error, not
# with "no".)
WITHOUT_DATA_STACK = """
import sys
class Block:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow', 'tensorboardX', 'sklearn'):
      raise ImportError(f'{name} is blocked')
sys.meta_path.insert(0, Block())
from absl import flags
from gpjax import bench

def run(name, *overrides):
  argv = [f'--config=configs/bench/{name}.py', f'--workdir={sys.argv[1]}/{name}', *overrides]
  flag_values = flags.FlagValues()
  bench.define_flags(flag_values, ['gpjax.bench', *argv])
  bench.parse_flags(['gpjax.bench', *argv], flag_values)
  bench.run(flag_values.config, flag_values.workdir, argv)

tiny = ['--config.batch=8', '--config.steps=1', '--config.warmup=1', '--config.matmul_size=0']
for name in ('train', 'eval'):
  run(name, *tiny, '--config.width=4', '--config.dtype=float32')
run('canvas', *tiny, '--config.grid=2')
run('probe', *sys.argv[2:])  # test_bench_probe's settings: its compiles are shared.
run('seeds', '--config.seeds=2', "--config.modes=('sequential', 'unroll')", '--config.width=4',
    '--config.source_size=8', '--config.batch=8', '--config.steps=1', '--config.warmup=0',
    '--config.torch=off')
assert 'ml_collections' in sys.modules
"""


def test_benchmarks_run_without_sklearn_or_tensorboardx(tmp_path, env):
  from test_bench_probe import TINY  # Not at the top: it imports this module.
  subprocess.run([sys.executable, '-c', WITHOUT_DATA_STACK, str(tmp_path), *TINY,
                  '--config.images=200'], check=True, env=env, cwd=REPO)
  for name in ('train', 'eval', 'canvas', 'probe', 'seeds'):
    with open(tmp_path / name / f'{name}.json') as f:
      assert json.load(f)['benchmark'] == name


def test_every_config_selects_its_own_benchmark_and_passes_its_checks():
  names = sorted(f[:-3] for f in os.listdir(CONFIGS) if f.endswith('.py') and f != '__init__.py')
  assert names == sorted(bench.BENCHES)
  for name in names:
    config = importlib.import_module(f'configs.bench.{name}').get_config()
    assert config.bench == name
    bench.check(config)


@pytest.mark.parametrize('name, override, words', [
    ('train', '--config.width=0', ['config.width=0', 'an int >= 1']),
    ('train', '--config.batch=(8,0)', ['config.batch[1]=0', 'an int >= 1']),
    ('train', '--config.base.model.padding=foo', ['config.model.padding', "'foo'", 'zero']),
    ('seeds', "--config.modes=('unroll', 'sequential')",
     ['config.modes', "start with 'sequential'"]),
    ('seeds', '--config.modes=sequential,unroll', ['config.modes', '''="('a', 'b')"''']),
    ('xla', "--config.settings=('', '')", ['config.settings', 'distinct']),
    ('probe', '--config.layer=6', ['config.layer=6', '(1, 2, 3, 4, 5)']),
])
def test_a_config_mistake_is_refused_naming_the_field(tmp_path, name, override, words):
  parsed, _ = parse(name, tmp_path, [override])
  with pytest.raises(ConfigError) as e:
    bench.check(parsed.config)
  for word in words:
    assert word in str(e.value), word


def run_cli(args: list[str], env) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'gpjax.bench', *args], env=env, cwd=REPO,
                        capture_output=True, text=True, check=False)


def test_help_lists_every_benchmark_config(env):
  out = run_cli(['--help'], env).stdout
  for name in bench.BENCHES:
    assert re.search(rf'^  {name} ', out, re.M), name
  assert '--config' in out and '--workdir' in out


def test_a_mistake_or_an_existing_record_stops_with_one_line(tmp_path, env):
  done = run_cli(['--config=configs/bench/train.py', f'--workdir={tmp_path}/run',
                  '--config.widht=1'], env)
  assert done.returncode != 0
  assert done.stderr.strip() == ("Bad flag: unknown config field in --config.widht ('widht': "
                                 "did you mean 'width'?)")
  done = run_cli(['--config=configs/bench/train.py', f'--workdir={tmp_path}/run',
                  '--config.width=0'], env)
  assert done.stderr.strip() == 'Bad config: config.width=0 is not allowed; it must be an int >= 1.'
  assert not os.path.exists(tmp_path / 'run')  # Refused before any work.
  (tmp_path / 'train.json').write_text('{"kept": true}')
  done = run_cli(['--config=configs/bench/train.py', f'--workdir={tmp_path}'], env)
  assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
  assert done.stderr.startswith(f'Not overwritten: {tmp_path}/train.json holds a record')
  assert (tmp_path / 'train.json').read_text() == '{"kept": true}'
