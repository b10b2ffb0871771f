"""One run per workdir: config changes named exactly, RESUMABLE fields (also nested) ignored,
old runs moved aside under fresh names, and a lock held by one real process at a time that a
SIGKILL releases."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import types

import numpy as np
import pytest

from gpjax import workdir as wd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**train):
  config = {'job': 'train', 'seed': 0,
            'model': {'width': 4, 'padding': 'zero'},
            'train': {'steps': 30, 'learning_rate': 0.001, 'log_every': 5, 'eval_every': 15,
                      'eval_at': '', 'checkpoint_every': 5, 'keep_checkpoints': 10,
                      'keep_at': '', 'epochs': 20.0, 'betas': (0.5, 0.999)}}
  config['train'].update(train)
  return config


def _write(workdir, config):
  """A run of ``config`` in ``workdir``: its config.json and the first file it writes."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config, f)
  open(os.path.join(workdir, 'metrics.jsonl'), 'w').close()


def test_config_changes_lists_every_other_leaf_exactly():
  old, new = _config(), _config(learning_rate=0.05, steps=40)
  new['model']['width'] = 8
  new['model']['stem'] = 'official'  # Added.
  del new['model']['padding']  # Removed.
  assert wd.config_changes(old, new) == [
      "model.padding: 'zero' -> (absent)", "model.stem: (absent) -> 'official'",
      'model.width: 4 -> 8', 'train.learning_rate: 0.001 -> 0.05']


def test_config_changes_ignores_every_resumable_field_and_only_those():
  changed = dict(steps=99, epochs=3.5, log_every=1, eval_every=7, eval_at='3,9',
                 checkpoint_every=2, keep_checkpoints=1, keep_at='4')
  assert wd.config_changes(_config(), _config(**changed)) == []
  assert set(changed) == {k.split('.')[1] for k in wd.RESUMABLE}
  assert wd.config_changes(_config(), _config(**changed), ignore={}) == [
      'train.checkpoint_every: 5 -> 2', "train.epochs: 20.0 -> 3.5",
      "train.eval_at: '' -> '3,9'", 'train.eval_every: 15 -> 7',
      "train.keep_at: '' -> '4'", 'train.keep_checkpoints: 10 -> 1',
      'train.log_every: 5 -> 1', 'train.steps: 30 -> 99']


def test_step_budget_is_not_resumable_under_a_poly_schedule():
  poly, constant = _config(schedule='poly'), _config(schedule='constant')
  assert wd.config_changes(poly, _config(schedule='poly', steps=60, log_every=1)) == [
      'train.steps: 30 -> 60']
  assert wd.config_changes(constant, _config(schedule='constant', steps=60)) == []


def test_nested_training_configs_are_not_resumable():
  """A study keeps its finished runs: a budget changed in its nested training config would
  mix runs of two budgets, so it is refused like any other field."""
  old = {'location': {'base': _config()}, 'study': {'seeds': 3}}
  new = {'location': {'base': _config(steps=800)}, 'study': {'seeds': 3}}
  new['location']['base']['model']['width'] = 64
  new['study']['seeds'] = 2
  assert wd.config_changes(old, new) == ['location.base.model.width: 4 -> 64',
                                         'location.base.train.steps: 30 -> 800',
                                         'study.seeds: 3 -> 2']
  assert wd.config_changes({'pretrain': {'steps': 1}}, {'pretrain': {'steps': 2}}) == [
      'pretrain.steps: 1 -> 2']


def test_a_workdir_with_only_its_config_holds_no_run_yet(tmp_path):
  """A job that stopped before writing anything (data not prepared) may start again with
  another config."""
  wider = _config()
  wider['model']['width'] = 8
  (tmp_path / 'config.json').write_text(json.dumps(_config()))
  wd.check_same_run(str(tmp_path), wider)
  (tmp_path / 'metrics.jsonl').write_text('')
  with pytest.raises(wd.WorkdirError, match='model.width: 4 -> 8'):
    wd.check_same_run(str(tmp_path), wider)


def test_values_compare_as_config_json_holds_them():
  old = json.loads(json.dumps(_config()))  # betas: [0.5, 0.999]
  assert old['train']['betas'] == [0.5, 0.999]
  assert wd.config_changes(old, _config()) == []  # The tuple (0.5, 0.999).
  assert wd.config_changes({'a': [1, 2]}, {'a': np.array([1, 2])}) == []
  assert wd.config_changes({'a': 3}, {'a': np.int64(3)}) == []
  assert wd.config_changes({'a': float('nan')}, {'a': float('nan')}) == []
  assert wd.config_changes({'a': True}, {'a': 1}) == ['a: True -> 1']
  assert wd.config_changes({'a': (1, 2)}, {'a': [1, 3]}) == ['a: [1, 2] -> [1, 3]']
  assert wd.config_changes({'a': {}}, {'a': {'b': 1}}) == [
      'a: {} -> (absent)', 'a.b: (absent) -> 1']


def test_check_same_run_raises_one_line_naming_the_changes(tmp_path):
  workdir = str(tmp_path / 'run')
  wd.check_same_run(workdir, _config())  # No workdir yet.
  _write(workdir, _config())
  wd.check_same_run(workdir, _config(steps=40, keep_at='10'))  # Resumable only.
  new = _config(learning_rate=0.05, steps=40)
  new['model']['width'] = 8
  with pytest.raises(wd.WorkdirError) as e:
    wd.check_same_run(workdir, new)
  assert str(e.value) == (
      f'workdir {workdir} holds a run with another config: model.width: 4 -> 8, '
      'train.learning_rate: 0.001 -> 0.05; resume with the same config, or start over with '
      '--restart (moves the old run aside)')


def test_check_same_run_shows_ten_changes_then_a_count(tmp_path):
  _write(str(tmp_path), {f'f{i:02d}': i for i in range(12)})
  with pytest.raises(wd.WorkdirError) as e:
    wd.check_same_run(str(tmp_path), {f'f{i:02d}': -i for i in range(1, 13)})
  message = str(e.value)
  assert '\n' not in message
  assert 'f00: 0 -> (absent), f01: 1 -> -1, ' in message
  assert 'f09: 9 -> -9 (and 3 more);' in message


def test_check_same_run_refuses_an_unreadable_config_json(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('')
  for text in ('{"half": ', '[1, 2]'):
    (tmp_path / 'config.json').write_text(text)
    with pytest.raises(wd.WorkdirError, match=r'holds an unreadable config\.json .*--restart'):
      wd.check_same_run(str(tmp_path), _config())


def _freeze_now(monkeypatch, when):
  fake = types.SimpleNamespace(now=lambda: when)
  monkeypatch.setattr(wd, 'datetime', types.SimpleNamespace(datetime=fake))


def test_move_aside_names_fresh_siblings_and_never_overwrites(tmp_path, monkeypatch):
  import datetime
  _freeze_now(monkeypatch, datetime.datetime(2026, 11, 3, 9, 5, 7))
  run = tmp_path / 'run'
  (tmp_path / 'run.old-20261103-090507-1').write_text('taken')  # A file holds the -1 name.
  moved = []
  for i in range(3):
    run.mkdir()
    (run / 'config.json').write_text(str(i))
    moved.append(wd.move_aside(str(run) + '/'))
  assert moved == [str(tmp_path / n) for n in ('run.old-20261103-090507',
                                               'run.old-20261103-090507-2',
                                               'run.old-20261103-090507-3')]
  assert [open(os.path.join(m, 'config.json')).read() for m in moved] == ['0', '1', '2']
  assert (tmp_path / 'run.old-20261103-090507-1').read_text() == 'taken'
  assert not run.exists()
  with pytest.raises(wd.WorkdirError, match='is not a directory: nothing to move aside'):
    wd.move_aside(str(run))


def test_move_aside_uses_the_current_time(tmp_path):
  (tmp_path / 'run').mkdir()
  moved = wd.move_aside(str(tmp_path / 'run'))
  assert re.fullmatch(re.escape(str(tmp_path)) + r'/run\.old-\d{8}-\d{6}', moved)
  assert os.path.isdir(moved)


def _holder(workdir, then='sleep'):
  """A process holding the lock of ``workdir``; it prints 'held' once it holds it."""
  code = ('import os, signal, sys, time\n'
          'from gpjax import workdir\n'
          f'with workdir.lock({workdir!r}):\n'
          '  print("held", flush=True)\n'
          f'  if {then!r} == "kill": os.kill(os.getpid(), signal.SIGKILL)\n'
          '  time.sleep(60)\n')
  proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO))
  return proc


def test_lock_refuses_a_second_process_until_the_first_is_killed(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = _holder(workdir)
  try:
    assert proc.stdout.readline() == 'held\n'
    with pytest.raises(wd.WorkdirError) as e:
      with wd.lock(workdir):
        pass
    assert re.fullmatch(
        f'workdir {re.escape(workdir)} is in use by pid {proc.pid} on host '
        f'{re.escape(socket.gethostname())} since \\d{{4}}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d; '
        'wait for it or use another workdir', str(e.value))
    with wd.lock(workdir, process_index=1):  # Another process of the same multi-host run.
      pass
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  with wd.lock(workdir):  # The kernel released the killed process's lock.
    with open(os.path.join(workdir, '.lock')) as f:
      assert f.read().splitlines()[:2] == [f'pid {os.getpid()}',
                                           f'host {socket.gethostname()}']
  assert os.path.getsize(os.path.join(workdir, '.lock')) == 0


def test_a_lock_left_by_a_process_killed_while_holding_it_does_not_block(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = _holder(workdir, then='kill')
  assert proc.stdout.readline() == 'held\n'
  assert proc.wait() == -signal.SIGKILL
  with open(os.path.join(workdir, '.lock')) as f:
    assert f.readline() == f'pid {proc.pid}\n'  # Its lines are still there...
  with wd.lock(workdir):  # ...but nothing holds the lock.
    with open(os.path.join(workdir, '.lock')) as f:
      assert f.readline() == f'pid {os.getpid()}\n'


def test_lock_creates_the_workdir_and_refuses_bad_paths(tmp_path):
  workdir = tmp_path / 'a' / 'b'
  with wd.lock(str(workdir)):
    assert sorted(os.listdir(workdir)) == ['.lock']
  (tmp_path / 'file').write_text('x')
  for path, message in (
      ('', "workdir is '': give a directory, e.g. --workdir=runs/NAME"),
      (str(tmp_path / 'file'),
       f'workdir {tmp_path / "file"} is a file, not a directory: give another --workdir')):
    for index in (0, 1):
      with pytest.raises(wd.WorkdirError) as e:
        with wd.lock(path, process_index=index):
          pass
      assert str(e.value) == message
  with pytest.raises(wd.WorkdirError, match=r'^workdir .*/file/run is not writable \(Not a '
                                            r'directory\): give another --workdir$'):
    with wd.lock(str(tmp_path / 'file' / 'run')):
      pass


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into a read-only directory anyway')
def test_lock_refuses_a_read_only_workdir(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / '.lock').write_text('')  # An old lock file stays writable: the dir is checked.
  workdir.chmod(0o555)
  try:
    with pytest.raises(wd.WorkdirError) as e:
      with wd.lock(str(workdir)):
        pass
    assert str(e.value) == (f'workdir {workdir} is not writable (Permission denied): give '
                            'another --workdir')
  finally:
    workdir.chmod(0o755)


def test_claim_checks_the_config_or_moves_the_old_run_aside(tmp_path):
  workdir = str(tmp_path / 'run')
  with wd.claim(workdir, _config()) as moved:  # A new workdir.
    assert moved is None
    _write(workdir, _config())
  with wd.claim(workdir, _config(steps=60)) as moved:  # Resumable.
    assert moved is None
  new = _config()
  new['model']['width'] = 8
  with pytest.raises(wd.WorkdirError, match=r'model\.width: 4 -> 8; resume'):
    with wd.claim(workdir, new):
      pass
  with wd.claim(workdir, new, restart=True) as old:
    moved = old
    assert re.fullmatch(re.escape(workdir) + r'\.old-\d{8}-\d{6}', moved)
    assert sorted(os.listdir(moved)) == ['.lock', 'config.json', 'metrics.jsonl']
    assert os.listdir(workdir) == ['.lock']
    with pytest.raises(wd.WorkdirError, match='is in use by pid'):  # The new one is held.
      with wd.lock(workdir):
        pass
  with wd.claim(workdir, new, restart=True) as again:  # Nothing to keep: nothing moves.
    assert again is None
  assert sorted(os.listdir(tmp_path)) == ['run', os.path.basename(moved)]
