"""The persistent compilation cache: written by one process, read by the next, off with ''."""

import json
import os
import subprocess
import sys

from gpjax import compilation_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Compiles a 12-layer program (AOT, timed) with the cache in argv[1]; prints the compile
# seconds, the cache hits JAX reports and the program's value.
PROGRAM = """
import json, sys, time
import jax, jax.numpy as jnp
from gpjax import compilation_cache
compilation_cache.enable(sys.argv[1])
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event.endswith('/cache_hits') else None)

def f(x):
  for i in range(12):
    x = jnp.tanh(x @ x.T / 16 + jnp.sin(x + i) / 2)
  return x.sum()

x = jnp.arange(256.0).reshape(16, 16) / 256
start = time.perf_counter()
compiled = jax.jit(f).lower(x).compile()
seconds = time.perf_counter() - start
print(json.dumps({'seconds': seconds, 'hits': len(hits), 'value': float(compiled(x))}))
"""


def _compile(directory):
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_')}
  out = subprocess.run([sys.executable, '-c', PROGRAM, directory], cwd=REPO, timeout=300,
                       env=dict(env, JAX_PLATFORMS='cpu', PYTHONPATH=REPO),
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
  cache = tmp_path / 'cache'
  cold = _compile(str(cache))
  entries = sorted(os.listdir(cache))
  assert cold['hits'] == 0 and entries
  warm = _compile(str(cache))
  assert warm['hits'] == len(entries) and sorted(os.listdir(cache)) == entries  # Read, nothing new.
  assert warm['value'] == cold['value']
  assert warm['seconds'] < cold['seconds'] / 2, (cold, warm)
  off = _compile('')
  assert off['hits'] == 0 and off['value'] == cold['value']
  assert sorted(os.listdir(cache)) == entries


def test_default_directory(monkeypatch, tmp_path):
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  path = compilation_cache.default_directory()
  assert os.path.dirname(path) == str(tmp_path / 'gpjax' / 'jax')
  assert path == compilation_cache.default_directory()  # One directory per CPU.
  monkeypatch.delenv('XDG_CACHE_HOME')
  monkeypatch.setenv('HOME', str(tmp_path))
  assert os.path.dirname(compilation_cache.default_directory()) == str(
      tmp_path / '.cache' / 'gpjax' / 'jax')
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', '/elsewhere')
  assert compilation_cache.default_directory() == '/elsewhere'
