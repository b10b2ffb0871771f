"""gpjax.allocator: freed memory stays in the process for the next allocations, the processes
it starts inherit the settings, and nothing changes where JAX has an accelerator."""

import ctypes
import os
import subprocess
import sys

import pytest

from gpjax import allocator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Five rounds of ten 4 MiB blocks and of three 48 MiB blocks from a new thread (as XLA's
# worker threads allocate), each written then freed: minor page faults of rounds 2-5, then
# what a child process sees of the settings.
_ROUNDS = r'''
import ctypes, os, resource, subprocess, sys, threading
from gpjax import allocator
if sys.argv[1] == 'on':
  assert allocator.keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def blocks(count, size):
  held = [libc.malloc(size) for _ in range(count)]
  for b in held:
    ctypes.memset(b, 1, size)
  for b in held:
    libc.free(b)
def one_round():
  blocks(10, 4 << 20)
  worker = threading.Thread(target=blocks, args=(3, 48 << 20))
  worker.start()
  worker.join()
one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
  one_round()
child = subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get("MALLOC_MMAP_MAX_"))'],
                       capture_output=True, text=True).stdout.strip()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, child)
'''


def _faults(mode):
  env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
  env.pop('JAX_PLATFORMS', None)
  out = subprocess.run([sys.executable, '-c', _ROUNDS, mode], env=env, cwd=REPO,
                       capture_output=True, text=True, check=True).stdout.split()
  return int(out[0]), out[1]


def test_freed_blocks_are_reused_without_page_faults():
  if not hasattr(ctypes.CDLL(None), 'mallopt') or not allocator.cpu_only():
    pytest.skip('not glibc, or an accelerator: keep_freed_memory changes nothing')
  off, child_off = _faults('off')
  on, child_on = _faults('on')
  assert off > 100_000  # glibc's defaults: 736 MiB faulted in again over the four rounds.
  assert on < 1_000
  assert child_off == 'None' and child_on == '0'  # Children inherit the settings.


def test_a_users_own_setting_stays(monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('MALLOC_TOP_PAD_', '12345')
  monkeypatch.delenv('MALLOC_TRIM_THRESHOLD_', raising=False)
  allocator.keep_freed_memory()
  assert os.environ['MALLOC_TOP_PAD_'] == '12345'
  assert os.environ['MALLOC_TRIM_THRESHOLD_'] == str(1 << 30)


@pytest.mark.parametrize('platforms, expected', [('cpu', True), ('cuda', False),
                                                 ('tpu,cpu', False)])
def test_only_where_jax_runs_on_the_cpu(monkeypatch, platforms, expected):
  monkeypatch.setenv('JAX_PLATFORMS', platforms)
  monkeypatch.delenv('MALLOC_TOP_PAD_', raising=False)
  assert allocator.cpu_only() is expected
  if not expected:
    assert allocator.keep_freed_memory() is False and 'MALLOC_TOP_PAD_' not in os.environ
