"""gpjax.allocator: freed memory stays in the process for the next allocations, and the
processes it starts inherit the settings."""

import os
import subprocess
import sys

import pytest

from gpjax import allocator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Rounds of ten 4 MiB blocks, written then freed: minor page faults of rounds 2-5.
_ROUNDS = r'''
import ctypes, os, resource, subprocess, sys
from gpjax import allocator
if sys.argv[1] == 'on':
  assert allocator.keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def one_round():
  blocks = [libc.malloc(4 << 20) for _ in range(10)]
  for b in blocks:
    ctypes.memset(b, 1, 4 << 20)
  for b in blocks:
    libc.free(b)
one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
  one_round()
child = subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get("MALLOC_TOP_PAD_"))'],
                       capture_output=True, text=True).stdout.strip()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, child)
'''


def _faults(mode):
  env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
  out = subprocess.run([sys.executable, '-c', _ROUNDS, mode], env=env, cwd=REPO,
                       capture_output=True, text=True, check=True).stdout.split()
  return int(out[0]), out[1]


def test_freed_blocks_are_reused_without_page_faults():
  if not hasattr(__import__('ctypes').CDLL(None), 'mallopt'):
    pytest.skip('not glibc: keep_freed_memory changes nothing')
  off, child_off = _faults('off')
  on, child_on = _faults('on')
  assert off > 20_000  # glibc's defaults: 160 MiB faulted in again over the four rounds.
  assert on < 1_000
  assert child_off == 'None' and child_on == str(64 << 20)  # Children inherit the setting.


def test_a_users_own_setting_stays(monkeypatch):
  monkeypatch.setenv('MALLOC_TOP_PAD_', '12345')
  for variable in ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_'):
    monkeypatch.delenv(variable, raising=False)
  allocator.keep_freed_memory()
  assert os.environ['MALLOC_TOP_PAD_'] == '12345'
  assert os.environ['MALLOC_TRIM_THRESHOLD_'] == str(1 << 30)
