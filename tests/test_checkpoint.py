"""Interrupted runs: kill -9 and SIGTERM in the middle of ``python -m gpjax.main``,
a corrupted newest checkpoint, SIGTERM right after a checkpoint. Every resumed run
must end with the parameters of an uninterrupted one (CPU, fixed seed)."""

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

from gpjax.core import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# configs/micro.py, shortened: 20 steps, checkpoints every 5, one evaluation at the
# end, a train row every step (so that an interrupted run leaves rows after its checkpoint).
OVERRIDES = {'train.steps': 20, 'train.eval_every': 20, 'train.checkpoint_every': 5,
             'train.log_every': 1, 'train.eval_at': (6,)}
TIMEOUT = 240  # Seconds for one run; one takes 10-30 s here.


def command(workdir, data_dir):
  flags = [f'--config.{k}={v}' for k, v in OVERRIDES.items()]
  return [sys.executable, '-m', 'gpjax.main', '--config=configs/micro.py',
          f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', *flags]


class Run(subprocess.Popen):
  """A subprocess writing to files (a pipe nobody reads while it runs can fill up)."""

  def __init__(self, argv, env):
    self.files = tempfile.TemporaryFile('w+'), tempfile.TemporaryFile('w+')
    super().__init__(argv, cwd=REPO, env=env, stdout=self.files[0], stderr=self.files[1],
                     text=True)

  def output(self):
    """(stdout, stderr) so far."""
    for f in self.files:
      f.seek(0)
    return tuple(f.read() for f in self.files)


def start(workdir, data_dir, env):
  return Run(command(workdir, data_dir), env)


def finish(run):
  """Waits for a run; returns (stdout, stderr) and fails on a non-zero exit."""
  try:
    run.wait(timeout=TIMEOUT)
  except subprocess.TimeoutExpired:
    run.kill()
    run.wait()
    pytest.fail(f'run timed out:\n{run.output()[1][-3000:]}')
  out, err = run.output()
  assert run.returncode == 0, err[-3000:]
  return out, err


def committed_steps(workdir):
  """Checkpoint steps that Orbax finished (in-flight saves end in -tmp)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def row_steps(workdir, split='train'):
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.readlines()
  return [json.loads(line)['step'] for line in lines
          if line.endswith('\n') and json.loads(line)['split'] == split]


def wait_until(process, condition, what):
  deadline = time.monotonic() + TIMEOUT
  while not condition():
    if process.poll() is not None:
      pytest.fail(f'the run ended (code {process.returncode}) before {what}:\n'
                  f'{process.output()[1][-3000:]}')
    if time.monotonic() > deadline:
      process.kill()
      process.wait()
      pytest.fail(f'timed out waiting until {what}')
    time.sleep(0.02)


def assert_same_state(workdir, reference_dir):
  state, reference = checkpoint.restore_raw(workdir), checkpoint.restore_raw(reference_dir)
  assert int(state['step']) == int(reference['step']) == OVERRIDES['train.steps']
  flat, flat_ref = jax.tree.leaves_with_path(state), jax.tree.leaves_with_path(reference)
  assert [p for p, _ in flat] == [p for p, _ in flat_ref]
  for (path, x), (_, y) in zip(flat, flat_ref):  # Same programs, same inputs: bit for bit.
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def assert_same_rows(workdir, reference_dir):
  """metrics.jsonl reads as one uninterrupted run: the reference's rows, no step twice."""
  def rows(w):
    with open(os.path.join(w, 'metrics.jsonl')) as f:
      return [json.loads(line) for line in f]
  got, want = rows(workdir), rows(reference_dir)
  assert [(r['step'], r['split']) for r in got] == [(r['step'], r['split']) for r in want]
  for r, s in zip(got, want):
    for key in ('loss', 'accuracy', 'test_loss', 'test_accuracy'):
      if key in s:
        assert r[key] == pytest.approx(s[key], rel=1e-5), (r, s)


@pytest.fixture(scope='module')
def reference(data_dir, env, tmp_path_factory):
  """The workdir of an uninterrupted run. Run first and alone, it fills the
  compilation cache, so the interrupted runs after it start faster."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  finish(start(workdir, data_dir, env))
  return workdir


def test_kill_9_then_sigterm_then_rerun_matches_uninterrupted_run(reference, data_dir, env,
                                                                   tmp_path):
  """The same command three times (one chain: each restart costs a run here):

  1. SIGKILL once a checkpoint at step >= 5 exists and rows were logged after
     it (rows past the checkpoint are in metrics.jsonl, a save may be half
     written): no results.json.
  2. The rerun resumes from the newest complete checkpoint; SIGTERM once it has
     logged a step past it: a checkpoint at the last finished step, one message
     line, exit code 0, no traceback.
  3. The rerun finishes: the uninterrupted run's parameters, BatchNorm
     statistics, optimizer state and metric rows (none duplicated), and results.
  """
  workdir = str(tmp_path)
  process = start(workdir, data_dir, env)

  def checkpoint_with_rows_after_it():  # Early (from step 5): the rerun has steps to spare.
    steps = committed_steps(workdir)
    return steps and steps[-1] >= 5 and max(row_steps(workdir), default=0) > steps[-1]

  wait_until(process, checkpoint_with_rows_after_it, 'a checkpoint and rows after it')
  process.kill()
  process.wait()
  assert process.returncode == -signal.SIGKILL
  resumed_from, logged = committed_steps(workdir)[-1], max(row_steps(workdir), default=0)
  assert 5 <= resumed_from < logged < OVERRIDES['train.steps']
  assert not os.path.exists(os.path.join(workdir, 'results.json'))

  process = start(workdir, data_dir, env)
  # A row past the killed run's last one means the loop (and its SIGTERM handler) runs.
  wait_until(process, lambda: max(row_steps(workdir), default=0) > logged,
             'a step past the killed run')
  process.send_signal(signal.SIGTERM)
  out, err = finish(process)  # Exit code 0.
  assert 'Traceback' not in err
  lines = [line for line in out.splitlines() if line.startswith('SIGTERM')]
  assert len(lines) == 1, out
  step = int(lines[0].split('at step ')[1].split(';')[0])
  assert lines[0] == f'SIGTERM: saved a checkpoint at step {step}; exiting.'
  assert logged < step < OVERRIDES['train.steps']
  assert committed_steps(workdir)[-1] == step
  assert row_steps(workdir) == list(range(1, step + 1))  # Logged up to the saved step, once.
  assert not os.path.exists(os.path.join(workdir, 'results.json'))

  finish(start(workdir, data_dir, env))
  assert_same_state(workdir, reference)
  assert_same_rows(workdir, reference)
  with open(os.path.join(workdir, 'results.json')) as f, \
       open(os.path.join(reference, 'results.json')) as g:
    got, want = json.load(f), json.load(g)
  assert got['steps'] == OVERRIDES['train.steps']
  for key in ('test_accuracy', 'test_loss', 'per_location_accuracy'):
    assert got[key] == pytest.approx(want[key], rel=1e-5), key
  # The curve spans the restarts: the step-6 evaluation, made before them, is read back.
  assert [e['step'] for e in got['curve']] == [e['step'] for e in want['curve']] == [6, 20]
  for e, f in zip(got['curve'], want['curve']):
    assert e == pytest.approx(f, rel=1e-5)


# Runs gpjax.main with checkpoint.save wrapped to send this process SIGTERM right
# after the save at step 10 has been issued.
SIGTERM_AFTER_SAVE = """
import os, runpy, signal, sys
from gpjax.core import checkpoint
save = checkpoint.save
def save_then_sigterm(manager, step, *args, **kwargs):
  save(manager, step, *args, **kwargs)
  if step == 10:
    os.kill(os.getpid(), signal.SIGTERM)
checkpoint.save = save_then_sigterm
sys.argv = ['gpjax.main', *sys.argv[1:]]
runpy.run_module('gpjax.main', run_name='__main__', alter_sys=True)
"""


def test_sigterm_after_checkpoint_then_corrupt_newest_falls_back(reference, data_dir, env,
                                                                tmp_path):
  """(1) SIGTERM arrives right after the checkpoint at step 10 was saved: the run
  exits cleanly (code 0) without saving step 10 twice (Orbax refuses that).
  (2) The files of that newest checkpoint are then overwritten: the rerun warns,
  restores step 5, retrains 6..20 (replacing the bad step 10) and ends like the
  uninterrupted run."""
  workdir = str(tmp_path)
  argv = command(workdir, data_dir)
  out, err = finish(Run([argv[0], '-c', SIGTERM_AFTER_SAVE, *argv[3:]], env))
  assert 'Traceback' not in err
  assert out.splitlines()[-1] == 'SIGTERM: saved a checkpoint at step 10; exiting.'
  assert committed_steps(workdir) == [5, 10]
  assert row_steps(workdir) == list(range(1, 11))

  files = [f for f in glob.glob(os.path.join(workdir, 'checkpoints', '10', 'state', '**'),
                                recursive=True) if os.path.isfile(f)]
  assert files
  for name in files:
    with open(name, 'wb') as f:
      f.write(b'not a checkpoint')
  out, _ = finish(start(workdir, data_dir, env))
  assert ('WARNING: checkpoint at step 10 could not be restored (JSONDecodeError); '
          'falling back to the previous one.') in out.splitlines()
  assert committed_steps(workdir) == [5, 10, 15, 20]
  assert int(checkpoint.restore_raw(workdir, 10)['step']) == 10  # Rewritten, readable.
  assert_same_state(workdir, reference)
  assert_same_rows(workdir, reference)


def _corrupt(workdir, step):
  """Overwrites every file of the checkpoint at ``step``."""
  files = [f for f in glob.glob(os.path.join(workdir, 'checkpoints', str(step), 'state', '**'),
                                recursive=True) if os.path.isfile(f)]
  assert files
  for name in files:
    with open(name, 'wb') as f:
      f.write(b'not a checkpoint')


def test_readers_fall_back_past_an_unreadable_checkpoint_and_refuse_when_none_loads(
    tmp_path, capsys):
  """A probe reads the newest checkpoint that loads, saying so in one line; when none loads,
  reading and resuming both refuse (training never starts afresh over the files)."""
  workdir = str(tmp_path)
  manager = checkpoint.make_manager(workdir, 5)
  for step in (2, 4):
    checkpoint.save(manager, step, {'w': np.full(3, step, np.float32)}, {})
  manager.wait_until_finished()
  manager.close()
  _corrupt(workdir, 4)
  assert float(checkpoint.restore_raw(workdir)['w'][0]) == 2.0
  assert capsys.readouterr().out == ('WARNING: checkpoint at step 4 could not be restored '
                                     '(JSONDecodeError); falling back to the previous one.\n')
  _corrupt(workdir, 2)
  with pytest.raises(FileNotFoundError, match=r'no checkpoint could be restored \(steps \[2, 4\]'):
    checkpoint.restore_raw(workdir)
  manager = checkpoint.make_manager(workdir, 5)
  with pytest.raises(FileNotFoundError, match=r'no checkpoint of steps \[2, 4\] could be restored'):
    checkpoint.restore_common([manager], [{'w': np.zeros(3, np.float32)}])
  manager.close()


def _state(**params):
  """A train-state-like tree on this process's device: dicts, a tuple, None, two dtypes."""
  tree = {'params': params, 'opt_state': ({'count': np.int32(3), 'mu': dict(params)}, None),
          'step': 7}
  return jax.device_put(tree)


def test_a_state_is_saved_packed_and_read_back_leaf_for_leaf(tmp_path):
  """One array per dtype on disk, the leaves' paths in the meta item; `restore_raw` gives
  nested dicts of host arrays, `restore_common` the target's own structure and shardings."""
  state = _state(w=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.float32(0.5))
  manager = checkpoint.make_manager(str(tmp_path), 5)
  checkpoint.save(manager, 7, state, {'config': {'seed': 1}})
  manager.wait_until_finished()
  packed = manager.item_metadata(7)['state']
  assert {k: tuple(v.shape) for k, v in packed.items()} == {
      'float32': (6 + 1 + 6 + 1,), 'int32': (2,)}  # count and step.
  raw = checkpoint.restore_raw(str(tmp_path))
  np.testing.assert_array_equal(raw['params']['w'], np.arange(6).reshape(2, 3))
  np.testing.assert_array_equal(raw['opt_state']['0']['mu']['w'], np.arange(6).reshape(2, 3))
  assert (float(raw['params']['b']), int(raw['opt_state']['0']['count']), int(raw['step'])) == (
      0.5, 3, 7)
  target = jax.device_put(jax.tree.map(np.zeros_like, state))
  [restored], step = checkpoint.restore_common([manager], [target])
  assert step == 7 and jax.tree.structure(restored) == jax.tree.structure(state)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert got.sharding == want.sharding and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
  manager.close()


def test_a_checkpoint_of_other_leaves_is_refused_naming_them(tmp_path, capsys):
  manager = checkpoint.make_manager(str(tmp_path), 5)
  checkpoint.save(manager, 1, _state(w=np.zeros(3, np.float32), b=np.float32(0)), {})
  manager.wait_until_finished()
  target = _state(w=np.zeros(3, np.float32), u=np.float32(0))
  with pytest.raises(FileNotFoundError, match=r'no checkpoint of steps \[1\] could be restored'):
    checkpoint.restore_common([manager], [target])
  assert ("missing ['opt_state/0/mu/u', 'params/u'], unexpected ['opt_state/0/mu/b', "
          "'params/b'], other shape or dtype []" in capsys.readouterr().out)
  manager.close()


def test_checkpoints_written_leaf_by_leaf_still_load(tmp_path):
  """A checkpoint of the earlier layout (each leaf its own Orbax array, no layout in meta)."""
  state = _state(w=np.arange(3, dtype=np.float32), b=np.float32(2))
  manager = checkpoint.make_manager(str(tmp_path), 5)
  manager.save(4, args=checkpoint.ocp.args.Composite(
      state=checkpoint.ocp.args.StandardSave(state), meta=checkpoint.ocp.args.JsonSave({})))
  manager.wait_until_finished()
  raw = checkpoint.restore_raw(str(tmp_path))
  np.testing.assert_array_equal(raw['params']['w'], [0, 1, 2])
  assert int(raw['step']) == 7
  [restored], step = checkpoint.restore_common([manager], [jax.tree.map(np.zeros_like, state)])
  assert step == 4
  np.testing.assert_array_equal(restored['params']['w'], [0, 1, 2])
  manager.close()
