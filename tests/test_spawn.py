"""gpjax.core.spawn: a function in a second process, its messages, its log, its end. (That it
dies with its parent: the micro suite killed in test_reproduce.)"""

import os
import time

import jax
import pytest

from gpjax.core import spawn


def add_and_report(a, b, send):
  """Child: prints, sends two messages, returns a + b and the JAX setting it was given."""
  print(f'adding {a} and {b}', flush=True)
  send(('seen', a))
  send(('seen', b))
  return a + b, spawn._setting('jax_persistent_cache_min_compile_time_secs')


def fail(send):
  raise ValueError('a child failed')


def sleep_until_terminated(path, send):
  with open(path, 'w') as f:
    f.write(str(os.getpid()))
  time.sleep(600)


def test_a_child_returns_its_value_its_messages_and_its_output(tmp_path):
  log = tmp_path / 'child.log'
  log.write_text('kept\n')
  messages = []
  before = spawn._setting('jax_persistent_cache_min_compile_time_secs')
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.125)
  try:
    child = spawn.Child(add_and_report, (2, 3), str(log), messages.append)
  finally:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', before)
  assert child.wait() == (5, 0.125)  # The value, and this process's setting in the child.
  assert messages == [('seen', 2), ('seen', 3)]
  assert log.read_text() == 'kept\nadding 2 and 3\n'  # Appended, not overwritten.
  assert child.process.exitcode == 0


def test_a_failed_child_names_its_log_which_holds_the_traceback(tmp_path):
  log = tmp_path / 'child.log'
  child = spawn.Child(fail, (), str(log), print)
  with pytest.raises(spawn.ChildError, match=f'exit code 1; its log: {log}'):
    child.wait()
  assert 'ValueError: a child failed' in log.read_text()


def test_stop_ends_a_running_child(tmp_path):
  child = spawn.Child(sleep_until_terminated, (str(tmp_path / 'pid'),), str(tmp_path / 'log'),
                      print)
  while not (tmp_path / 'pid').exists():
    time.sleep(0.05)
  child.stop()
  assert child.process.exitcode == -15  # SIGTERM, well before the child's 600 s.
  with pytest.raises(spawn.ChildError, match='exit code -15'):
    child.wait()
