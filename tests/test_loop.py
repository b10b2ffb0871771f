"""The training loop: when it logs, evaluates and checkpoints, the best evaluation, resume,
SIGTERM, and the non-finite guards (on a one-number state, then in real training runs)."""

import json
import math
import os
import re
import signal

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_classification import micro_config, read_rows

from gpjax.core import checkpoint
from gpjax.core import loop
from gpjax.core import trainer
from gpjax.tasks import classification


@flax.struct.dataclass
class _State:
  """What the loop reads of a train state: params and batch_stats (checked finite)."""
  step: jax.Array
  params: dict
  batch_stats: dict


def _state():
  return _State(jnp.zeros((), jnp.int32), {'w': jnp.zeros(())}, {'mean': jnp.zeros(())})


def _step(state, batch):
  """Adds the batch (a number) to w; the loss is the batch."""
  new = state.replace(step=state.step + 1, params={'w': state.params['w'] + batch})
  return new, {'loss': jnp.asarray(batch, jnp.float32)}


def _batches(starts):
  def batches(start, total):
    starts.append(start)
    return iter(np.arange(start + 1, total + 1, dtype=np.float32))  # Step s feeds s.
  return batches


def _run(workdir, total, *, step_fn=_step, starts=None, accuracy=None, **schedule):
  schedule = dict(dict(eval_every=3, checkpoint_every=2, log_every=1, keep_checkpoints=10,
                       batch_size=4), **schedule)
  accuracy = accuracy or (lambda w: 1 / (1 + w))  # Falls as training goes on.
  return loop.run(str(workdir), _state(), schedule=loop.Schedule(total=total, **schedule),
                  config={'name': 'toy'}, step_fn=step_fn,
                  batches=_batches([] if starts is None else starts),
                  evaluate=lambda s: {'test_accuracy': accuracy(float(s.params['w']))},
                  metric='test_accuracy', desc='toy')


def _checkpoints(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')))


def test_logs_evaluates_and_checkpoints_on_schedule_and_keeps_the_best(tmp_path):
  out = _run(tmp_path, 6)
  assert float(out.state.params['w']) == 1 + 2 + 3 + 4 + 5 + 6
  assert out.last_eval == {'test_accuracy': 1 / 22, 'step': 6}
  assert out.best == {'test_accuracy': 1 / 7, 'step': 3} and out.preempted_at_step is None
  rows = read_rows(str(tmp_path))
  assert [(r['step'], r['split']) for r in rows] == [
      (1, 'train'), (2, 'train'), (3, 'train'), (3, 'test'), (4, 'train'), (5, 'train'),
      (6, 'train'), (6, 'test')]
  assert [r['loss'] for r in rows if r['split'] == 'train'] == [1, 2, 3, 4, 5, 6]
  assert all(r['images_per_s'] > 0 for r in rows if r['split'] == 'train')
  assert _checkpoints(tmp_path) == [2, 4, 6]  # Every 2 steps and the last.
  assert float(checkpoint.restore_raw(str(tmp_path))['params']['w']) == 21
  with open(tmp_path / 'config.json') as f:
    assert json.load(f) == {'name': 'toy'}


def test_keep_at_checkpoints_survive_and_load_by_step(tmp_path):
  """Steps of ``keep_at`` are checkpointed (step 3 is no checkpoint step) and never deleted by
  the newest-n rule; probes load them by step, and a step not held is refused by name."""
  _run(tmp_path, 8, keep_checkpoints=1, eval_every=8, keep_at=(1, 3, 20))
  assert _checkpoints(tmp_path) == [1, 3, 8]  # 20 is past the end; 2, 4 and 6 were replaced.
  assert checkpoint.saved_steps(str(tmp_path)) == [1, 3, 8]
  assert float(checkpoint.restore_raw(str(tmp_path), 3)['params']['w']) == 1 + 2 + 3
  assert float(checkpoint.restore_raw(str(tmp_path))['params']['w']) == 36
  with pytest.raises(FileNotFoundError, match=r'at step 4; it holds steps \[1, 3, 8\]'):
    checkpoint.restore_raw(str(tmp_path), 4)


def test_logs_average_the_steps_since_the_last_log(tmp_path):
  _run(tmp_path, 6, log_every=4, eval_every=6, checkpoint_every=6)
  assert [(r['step'], r['split'], r.get('loss')) for r in read_rows(str(tmp_path))] == [
      (4, 'train', 2.5), (6, 'train', 5.5), (6, 'test', None)]


def test_a_rerun_resumes_from_the_newest_checkpoint(tmp_path):
  starts = []
  _run(tmp_path, 4, starts=starts)
  out = _run(tmp_path, 6, starts=starts)
  assert starts == [0, 4]  # The second run reads batches from step 5 on.
  assert float(out.state.params['w']) == 21  # As the uninterrupted run above.
  steps = [(r['step'], r['split']) for r in read_rows(str(tmp_path))]
  assert len(steps) == len(set(steps)) and steps[-2:] == [(6, 'train'), (6, 'test')]
  again = _run(tmp_path, 6, starts=starts)  # Nothing left to train: evaluates the restored state.
  assert starts[-1] == 6 and again.last_eval == {'test_accuracy': 1 / 22, 'step': 6}


def test_sigterm_checkpoints_the_last_step_and_stops(tmp_path):
  previous = signal.getsignal(signal.SIGTERM)

  def step_fn(state, batch):
    if batch == 3:
      os.kill(os.getpid(), signal.SIGTERM)
    return _step(state, batch)

  out = _run(tmp_path, 8, step_fn=step_fn, checkpoint_every=8)
  assert out.preempted_at_step == 3 and float(out.state.params['w']) == 6
  assert _checkpoints(tmp_path) == [3]
  assert signal.getsignal(signal.SIGTERM) is previous  # The handler is put back.


def test_non_finite_loss_or_parameters_stop_naming_the_step(tmp_path):
  def step_fn(state, batch):
    return _step(state, np.float32(np.inf) if batch == 3 else batch)

  with pytest.raises(FloatingPointError, match=r'Non-finite training loss \(inf\) at step 3'):
    _run(tmp_path / 'loss', 6, step_fn=step_fn, checkpoint_every=1)
  assert _checkpoints(tmp_path / 'loss') == [1, 2]

  def nan_params(state, batch):  # A finite loss, but the update makes w NaN.
    new, metrics = _step(state, batch)
    return (new.replace(params={'w': new.params['w'] * np.nan}) if batch == 2 else new), metrics

  with pytest.raises(FloatingPointError, match=r'Non-finite parameters after step 2'):
    _run(tmp_path / 'params', 6, step_fn=nan_params, checkpoint_every=1)
  assert _checkpoints(tmp_path / 'params') == [1]


# The same guards in real training runs of the classification task.


def test_non_finite_loss_stops_and_keeps_good_checkpoints(data_dir, tmp_path):
  """A learning rate of 1e30 blows the parameters up within a few steps: the run
  stops with a FloatingPointError naming the step, and every checkpoint left
  is from before that step and holds finite parameters."""
  config = micro_config(data_dir, train__learning_rate=1e30, train__checkpoint_every=1,
                        train__log_every=1, train__eval_every=30)
  workdir = str(tmp_path)
  with pytest.raises(FloatingPointError, match=r'Non-finite training loss .* at step \d+') as e:
    classification.train_and_evaluate(config, workdir)
  bad_step = int(re.search(r'at step (\d+)', str(e.value))[1])
  assert 1 < bad_step < config.train.steps
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')))
  assert steps and max(steps) < bad_step
  assert steps == list(range(max(1, bad_step - config.train.keep_checkpoints), bad_step))
  state = checkpoint.restore_raw(workdir)
  assert int(state['step']) == bad_step - 1
  for leaf in jax.tree.leaves(state['params']) + jax.tree.leaves(state['batch_stats']):
    assert np.all(np.isfinite(leaf))
  rows = read_rows(workdir)  # Rows up to the last good step only; no results.json.
  assert [r['step'] for r in rows] == list(range(1, bad_step))
  assert all(math.isfinite(r['loss']) for r in rows)
  assert not os.path.exists(os.path.join(workdir, 'results.json'))


def test_non_finite_update_is_not_checkpointed(data_dir, tmp_path, monkeypatch):
  """The loss of step s is computed before its update, so it can be finite while
  the update makes the parameters NaN (e.g. overflowing gradients). Such a state
  must not be saved as the newest checkpoint: a rerun would resume from it."""
  poisoned_step = 4  # optax counts from 0: the 4th update is NaN.
  make_optimizer = trainer.create_optimizer

  def poisoned_optimizer(t, total_steps):
    def update(updates, state, params=None):
      scale = jnp.where(state.count == poisoned_step - 1, jnp.nan, 1.0)
      return jax.tree.map(lambda u: u * scale, updates), optax.ScaleByScheduleState(
          count=state.count + 1)
    poison = optax.GradientTransformation(
        lambda params: optax.ScaleByScheduleState(count=jnp.zeros((), jnp.int32)), update)
    return optax.chain(make_optimizer(t, total_steps), poison)

  monkeypatch.setattr(trainer, 'create_optimizer', poisoned_optimizer)
  config = micro_config(data_dir, train__checkpoint_every=1, train__log_every=1,
                        train__eval_every=30, train__steps=8)
  workdir = str(tmp_path)
  with pytest.raises(FloatingPointError, match=rf'step {poisoned_step}\b'):
    classification.train_and_evaluate(config, workdir)
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')))
  assert steps == list(range(1, poisoned_step))
  state = checkpoint.restore_raw(workdir)
  assert int(state['step']) == poisoned_step - 1
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state['params']))
