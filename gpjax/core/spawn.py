"""A function run in a second Python process beside this one: its output appended to a log
file, its messages delivered here, and its life tied to this process.

The suites run studies this way on CPU hosts (`gpjax.studies.reproduce`), where one study's
process leaves part of the cores idle while it traces, compiles and evaluates. The child is
started fresh (``spawn``: no copy of this process's XLA state) with this process's JAX
settings, and kills itself within half a second once this process is gone, so a
killed parent never leaves a child writing into its workdir.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable

import jax
from absl import logging

# JAX settings the child takes over (the compilation cache, the tests' optimisation level).
_JAX_SETTINGS = ('jax_enable_compilation_cache', 'jax_compilation_cache_dir',
                 'jax_persistent_cache_min_compile_time_secs',
                 'jax_persistent_cache_min_entry_size_bytes', 'jax_disable_most_optimizations')
_RETURNED = 'gpjax.core.spawn: returned'  # Tags the child's last message: the return value.
_STOP_SECONDS = 300  # After SIGTERM, how long `Child.stop` waits before SIGKILL.


def _setting(name: str) -> Any:
  """This process's value of the JAX setting ``name`` (some read as attributes, some not)."""
  try:
    return getattr(jax.config, name)
  except AttributeError:
    return jax.config.read(name)


class ChildError(RuntimeError):
  """The child ended without returning (an exception, a signal): its log says why."""


def _watch_parent(parent: int) -> None:
  """Kills this process once ``parent`` has exited (the child is then reparented)."""
  while os.getppid() == parent:
    time.sleep(0.5)  # Each wake takes the GIL from the work: twice a second is enough.
  os.kill(os.getpid(), signal.SIGKILL)


def _main(target: Callable[..., Any], args: tuple[Any, ...], log_path: str, parent: int,
          settings: dict[str, Any], verbosity: int, queue: Any) -> None:
  """The child: output to ``log_path``, the parent's JAX settings, ``target(*args, send)``
  where ``send(message)`` reaches the parent's ``on_message``; then the return value."""
  threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
  log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  for fd in (1, 2):
    os.dup2(log, fd)
  sys.stdout.reconfigure(line_buffering=True)  # Lines reach the log as they are printed.
  logging.set_verbosity(verbosity)
  for name, value in settings.items():
    jax.config.update(name, value)
  try:
    value = target(*args, queue.put)
  except BaseException:
    traceback.print_exc()
    sys.stderr.flush()
    raise SystemExit(1)
  sys.stdout.flush()
  queue.put((_RETURNED, value))


class Child:
  """``target(*args, send)`` in a spawned process (``target`` a module-level function, its
  arguments picklable); each ``send(message)`` there calls ``on_message(message)`` here, on a
  thread of its own."""

  def __init__(self, target: Callable[..., Any], args: tuple[Any, ...], log_path: str,
               on_message: Callable[[Any], None]):
    context = multiprocessing.get_context('spawn')
    self.log_path = log_path
    self._queue = context.Queue()
    self._on_message = on_message
    self._returned: list[Any] = []
    self.process = context.Process(
        target=_main, daemon=False,
        args=(target, args, log_path, os.getpid(),
              {name: _setting(name) for name in _JAX_SETTINGS},
              logging.get_verbosity(), self._queue))
    self.process.start()
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self) -> None:
    while True:
      message = self._queue.get()
      if isinstance(message, tuple) and message[:1] == (_RETURNED,):
        self._returned.append(message[1])
        return
      self._on_message(message)

  def wait(self) -> Any:
    """Waits for the child; returns ``target``'s value, or raises `ChildError`."""
    self.process.join()
    if self.process.exitcode == 0:  # Its last message was sent before it exited.
      self._reader.join(timeout=60)
    if self.process.exitcode != 0 or not self._returned:
      raise ChildError(f'the process {self.process.pid} ended with exit code '
                       f'{self.process.exitcode}; its log: {self.log_path}')
    return self._returned[0]

  def stop(self) -> None:
    """If the child still runs: SIGTERM (a training loop saves a checkpoint and returns),
    then waits; SIGKILL if it has not ended after `_STOP_SECONDS`."""
    if self.process.is_alive():
      self.process.terminate()
      self.process.join(_STOP_SECONDS)
      if self.process.is_alive():
        self.process.kill()
        self.process.join()
