"""``python -m gpjax.main`` with a mistake exits non-zero with one clear line on
stderr, naming the field, the value and what is allowed, and no traceback."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (arguments after --config=configs/micro.py, extra environment, words the line must hold)
CASES = {
    'typo_in_field': (['--config.model.paddin=zero'], {},
                      ['paddin', 'padding']),  # The field and the suggestion.
    'unknown_value': (['--config.model.padding=foo'], {},
                      ['config.model.padding', "'foo'", 'zero', 'circular', 'reflect',
                       'replicate', 'partial', 'none']),
    'wrong_type': (['--config.model.width=wide'], {}, ['config.model.width', 'wide', 'int']),
    'batch_not_divisible': (
        ['--config.train.batch_size=12'],
        {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'},
        ['config.train.batch_size', '12', 'divisible', '8']),
    'missing_workdir': (None, {}, ['--workdir']),
}


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory):
  """Runs every case at once (each is a Python start-up, ~3 s); {name: (code, stderr)}."""
  root = tmp_path_factory.mktemp('cli')
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  processes = {}
  for name, (args, extra_env, _) in CASES.items():
    argv = [sys.executable, '-m', 'gpjax.main', '--config=configs/micro.py']
    if args is None:
      args = []
    else:
      argv.append(f'--workdir={root / name}')
    # A data dir that does not exist: every case must stop before reading data.
    argv += [f'--config.data.data_dir={root / "no_data"}', *args]
    processes[name] = subprocess.Popen(argv, cwd=REPO, env=dict(env, **extra_env),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  results = {}
  for name, p in processes.items():
    try:
      out, err = p.communicate(timeout=180)
    except subprocess.TimeoutExpired:
      p.kill()
      out, err = p.communicate()
    results[name] = (p.returncode, out, err)
  assert not os.path.exists(root / 'no_data')
  return results


@pytest.mark.parametrize('name', list(CASES))
def test_bad_command_line_gives_one_clear_line(outcomes, name):
  code, out, err = outcomes[name]
  assert code not in (0, None) and code > 0, (code, err)
  lines = err.strip().splitlines()
  assert len(lines) == 1, err  # One line: no traceback, no logs.
  line = lines[0]
  assert line.startswith(('Bad flag: ', 'Bad config: ')), line
  for word in CASES[name][2]:
    assert word in line, (word, line)
  assert not out.strip(), out
