"""One run per workdir: its config may change only in RESUMABLE fields, one process at a time.

A workdir's ``config.json`` (written by the job) names the run it holds. `check_same_run`
refuses a config that differs from it in any field but the step budget and the cadences;
`move_aside` keeps an old run under a fresh sibling name (``--restart``); `lock` lets one
process use a workdir at a time. `claim` does all three in the order a job needs them.
Standard library and numpy only (and `gpjax.errors`): gpjax.main calls it before any work.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import math
import os
import socket
import tempfile
from typing import Any, Iterator, Mapping

import numpy as np

from gpjax.errors import WorkdirError

# Config fields of a training run that may change when it resumes (top-level fields only:
# a study or suite keeps its finished runs, so a budget or cadence changed in its nested
# training config, ``location.base.train.steps``, would mix runs of two configs). Each maps
# to why a change leaves the run the same run.
RESUMABLE = {
    # The step budget: a longer (or shorter) run of the same training, resumed from its
    # newest checkpoint. Only under a constant learning rate (see `_BUDGET`).
    'train.steps': 'the step budget',
    'train.epochs': 'the step budget, in passes over the train split',
    # When rows, evaluations and checkpoints happen; not what a training step computes.
    'train.log_every': 'steps between metrics rows',
    'train.eval_every': 'steps between evaluations',
    'train.eval_at': 'extra evaluation steps',
    'train.checkpoint_every': 'steps between checkpoints',
    'train.keep_checkpoints': 'newest checkpoints kept',
    'train.keep_at': 'checkpoints kept for good',
}
# Not here: data.data_dir (another dir may hold another version of the data set), eval.*
# (results.json would mix evaluation protocols), seed, batch size and every model field.

# The budget fields change a 'poly' rate (rate x (1 - step / total)^power) at every step, so
# they are resumable only where ``<prefix>train.schedule`` is absent (classification) or
# 'constant', in the old and the new config.
_BUDGET = ('train.steps', 'train.epochs')

CONFIG_FILE = 'config.json'
LOCK_FILE = '.lock'


def _flat(d: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}; an empty dict is a leaf."""
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping) and v:
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _as_json(obj: Any) -> Any:
  """``obj`` as config.json holds it (`gpjax.writers.write_json`): tuples as lists, numpy
  scalars and arrays as numbers and lists."""
  def native(value: Any) -> Any:
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  return json.loads(json.dumps(obj, default=native))


def _same(a: Any, b: Any) -> bool:
  """JSON values equal, with True != 1 and NaN == NaN."""
  if isinstance(a, bool) or isinstance(b, bool):
    return type(a) is type(b) and a == b
  if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
    return True
  if isinstance(a, list) and isinstance(b, list):
    return len(a) == len(b) and all(map(_same, a, b))
  if isinstance(a, dict) and isinstance(b, dict):
    return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
  return a == b


def _resumable(key: str, old: dict[str, Any], new: dict[str, Any],
               ignore: Mapping[str, str]) -> bool:
  if key not in ignore:
    return False
  return key not in _BUDGET or all(flat.get('train.schedule', 'constant') == 'constant'
                                   for flat in (old, new))


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any],
                   ignore: Mapping[str, str] = RESUMABLE) -> list[str]:
  """``'field: old -> new'`` for every leaf that differs, sorted by field.

  Args:
    old: a config as read from config.json.
    new: a config dict (``ConfigDict.to_dict()``); tuples equal the lists JSON made of them.
    ignore: the fields whose changes are left out (path suffixes); ``{}`` lists them all.
  """
  old, new = _flat(_as_json(old)), _flat(_as_json(new))
  absent = object()
  show = lambda v: '(absent)' if v is absent else repr(v)
  changes = []
  for key in sorted(old.keys() | new.keys()):
    a, b = old.get(key, absent), new.get(key, absent)
    if (a is absent or b is absent or not _same(a, b)) and not _resumable(key, old, new, ignore):
      changes.append(f'{key}: {show(a)} -> {show(b)}')
  return changes


def check_same_run(workdir: str, config: Mapping[str, Any]) -> None:
  """Raises WorkdirError when ``workdir/config.json`` holds a config that ``config`` differs
  from in a field not in RESUMABLE; a workdir without config.json holds no run yet."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path) or not set(os.listdir(workdir)) - {CONFIG_FILE, LOCK_FILE}:
    return  # No run yet, or one that stopped before it wrote anything but its config.
  try:
    with open(path) as f:
      old = json.load(f)
    if not isinstance(old, dict):
      raise ValueError(f'a JSON {type(old).__name__}, not an object')
  except (OSError, ValueError) as e:
    raise WorkdirError(f'workdir {workdir} holds an unreadable {CONFIG_FILE} ({e}); start '
                       'over with --restart (moves the old run aside)') from None
  changes = config_changes(old, config)
  if changes:
    shown = ', '.join(changes[:10]) + (f' (and {len(changes) - 10} more)'
                                       if len(changes) > 10 else '')
    raise WorkdirError(f'workdir {workdir} holds a run with another config: {shown}; resume '
                       'with the same config, or start over with --restart (moves the old '
                       'run aside)')


def move_aside(workdir: str) -> str:
  """Renames ``workdir`` to ``DIR.old-YYYYmmdd-HHMMSS`` (``-1``, ``-2``, ... when taken) and
  returns that path; nothing is deleted or overwritten."""
  workdir = os.path.normpath(workdir)
  if not os.path.isdir(workdir):
    raise WorkdirError(f'workdir {workdir} is not a directory: nothing to move aside')
  base = f'{workdir}.old-{datetime.datetime.now():%Y%m%d-%H%M%S}'
  for n in range(1000):
    target = base if n == 0 else f'{base}-{n}'
    if os.path.lexists(target):
      continue
    try:  # mkdir claims the name atomically; rename then replaces only that empty dir.
      os.mkdir(target)
    except FileExistsError:
      continue
    try:
      os.rename(workdir, target)
    except OSError as e:
      os.rmdir(target)
      raise WorkdirError(f'workdir {workdir} could not be moved to {target} ({e.strerror})'
                         ) from None
    return target
  raise WorkdirError(f'workdir {workdir}: no free name {base}-N to move it aside to')


def _check_path(workdir: str) -> None:
  if not workdir:
    raise WorkdirError("workdir is '': give a directory, e.g. --workdir=runs/NAME")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'workdir {workdir} is a file, not a directory: give another --workdir')


def _holder(fd: int) -> str:
  """'pid 1234 on host foo since 2026-11-03 12:00:00' from the lock file's text."""
  os.lseek(fd, 0, os.SEEK_SET)
  fields = dict(line.split(' ', 1) for line in os.read(fd, 4096).decode().splitlines()
                if ' ' in line)
  if 'pid' not in fields:  # The holder has not written its line yet.
    return 'another process'
  return (f'pid {fields["pid"]} on host {fields.get("host", "?")} since '
          f'{fields.get("since", "?")}')


@contextlib.contextmanager
def lock(workdir: str, process_index: int = 0) -> Iterator[None]:
  """Holds ``workdir/.lock`` (``fcntl.flock``, created with the workdir when missing) for
  the block; it holds ``pid``, ``host`` and ``since`` lines naming this process.

  The kernel drops the lock when the process ends, however it ends, so a killed run never
  blocks the next one. The processes of one multi-host run share their workdir: only
  ``process_index`` 0 takes the lock, the others only check the path.

  Raises:
    WorkdirError: the path is '' or a file, the directory is not writable, or another
      process holds the lock.
  """
  _check_path(workdir)
  if process_index != 0:
    yield
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):  # A real write: permission bits lie to root.
      pass
    fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise WorkdirError(f'workdir {workdir} is not writable ({e.strerror}): give another '
                       '--workdir') from None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirError(f'workdir {workdir} is in use by {_holder(fd)}; wait for it or use '
                         'another workdir') from None
    except OSError as e:
      if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
        raise WorkdirError(f'workdir {workdir} is on a file system without file locks '
                           f'({e.strerror}): give a --workdir on another one') from None
      raise
    since = datetime.datetime.now().isoformat(' ', 'seconds')
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'pid {os.getpid()}\nhost {socket.gethostname()}\nsince {since}\n'.encode(), 0)
    try:
      yield
    finally:
      os.ftruncate(fd, 0)  # While still held: the next holder writes its own lines.
  finally:
    os.close(fd)  # Releases the lock.


@contextlib.contextmanager
def claim(workdir: str, config: Mapping[str, Any], *, restart: bool = False,
          process_index: int = 0) -> Iterator[str | None]:
  """Locks ``workdir`` for a job with ``config`` and yields the path the old run was moved
  to (``restart``), or None.

  Without ``restart``, raises WorkdirError unless the workdir is new or holds a run of the
  same config (`check_same_run`). With it, a workdir holding anything is moved aside under
  its lock and a fresh one is locked. Only ``process_index`` 0 moves: the other processes
  of a multi-host run must wait for it (a barrier) before they read the workdir.
  """
  moved = None
  with lock(workdir, process_index):
    if not restart:
      check_same_run(workdir, config)
    elif process_index == 0 and set(os.listdir(workdir)) - {LOCK_FILE}:
      moved = move_aside(workdir)
    if moved is None:
      yield None
      return
  with lock(workdir, process_index):
    yield moved
