"""The training loop shared by the classification and segmentation jobs.

Resumes from the newest checkpoint in ``workdir``, logs, evaluates, checkpoints
(keeping the newest n and the best by the evaluation metric), stops with a
message naming the step on a non-finite loss or parameters, and turns SIGTERM
(preemption) into a checkpoint and a clean exit.
"""

import dataclasses
import os
import signal
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from gpjax.core import checkpoint
from gpjax.core import writers


@dataclasses.dataclass(frozen=True)
class Schedule:
  """When things happen, in steps."""
  total: int
  eval_every: int
  checkpoint_every: int
  log_every: int
  keep_checkpoints: int
  batch_size: int  # Global batch, for images/s.
  eval_at: tuple[int, ...] = ()  # Extra evaluation steps (e.g. log-spaced, for curves).
  keep_at: tuple[int, ...] = ()  # Checkpoints saved and never deleted (probes over training).


@dataclasses.dataclass
class Outcome:
  """How the loop ended: the final state and evaluations, or a preemption."""
  state: Any
  last_eval: dict[str, Any] | None = None
  best: dict[str, Any] | None = None
  preempted_at_step: int | None = None
  evals: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # Every evaluation's
  # scalars with its step, in order (those before a resume read back from metrics.jsonl).


class _Preemption:
  """Whether to checkpoint and stop before the next step, on SIGTERM.

  One process: SIGTERM sets a flag. Several (``jax.distributed``): JAX's preemption
  service (its own SIGTERM handler, left in place) tells every process when any one
  is signalled, and ``reached(step)`` turns true on all of them at the same step, so
  they save one checkpoint together instead of waiting on a peer that left.
  """

  def __init__(self):
    self.requested = False
    self._sync = None
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      self._sync = multihost_utils.reached_preemption_sync_point
    else:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    self.requested = True

  def reached(self, step: int) -> bool:
    """Called after every step (``step`` = steps done) on every process."""
    if self._sync is not None:
      self.requested = self._sync(step)
    return self.requested

  def restore(self):
    if self._sync is None:
      signal.signal(signal.SIGTERM, self._previous)


def run(workdir: str, state: Any, *, schedule: Schedule, config: dict[str, Any],
        step_fn: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]],
        batches: Callable[[int, int], Iterator[Any]],
        evaluate: Callable[[Any], dict[str, Any]], metric: str, desc: str) -> Outcome:
  """Trains ``state`` to ``schedule.total`` steps: `run_group` of one run.

  Args:
    workdir: where checkpoints/, metrics.jsonl, TensorBoard events and
      config.json go.
    state: the initial state (replicated); replaced by the newest checkpoint.
    schedule: steps between logs, evaluations and checkpoints.
    config: the run's config as a dict, saved as config.json and with each
      checkpoint.
    step_fn: (state, host batch) -> (state, metrics with a scalar 'loss').
    batches: (start step, number of steps) -> iterator of host batches.
    evaluate: state -> test metrics, ``metric`` among them (higher is better).
    metric: the evaluation metric that picks the best checkpoint.
    desc: the progress bar's label.
  """
  return run_group([workdir], state, schedule=schedule, configs=[config], step_fn=step_fn,
                   batches=batches, evaluate=lambda i, s: evaluate(s), metric=metric,
                   desc=desc, split=lambda s: [s], join=lambda states: states[0])[0]


def run_group(workdirs: Sequence[str], state: Any, *, schedule: Schedule,
              configs: Sequence[dict[str, Any]],
              step_fn: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]],
              batches: Callable[[int, int], Iterator[Any]],
              evaluate: Callable[[int, Any], dict[str, Any]], metric: str, desc: str,
              split: Callable[[Any], Sequence[Any]],
              join: Callable[[Sequence[Any]], Any]) -> list[Outcome]:
  """Trains R runs that share one schedule, stepped together (`gpjax.core.multirun`), each
  with its own workdir, checkpoints and metrics, as `run` would train it alone.

  Args:
    workdirs, configs: the R runs' workdirs and configs (dicts, saved with checkpoints).
    state: the group's state (R states in a tuple, or stacked on a leading run axis);
      ``split(state)`` gives the R states, ``join`` makes one from them.
    schedule: shared by every run.
    step_fn: (group state, group host batch) -> (group state, metrics: scalars (R = 1), (R,)
      arrays or R-tuples, 'loss' among them); ``batches(start, num_steps)`` yields batches.
    evaluate: (run index, run state) -> test metrics, ``metric`` among them.
    metric, desc: as for `run`.

  Returns:
    Each run's `Outcome`. Runs resume from the newest step all their checkpoints hold
    (`checkpoint.restore_common`); a non-finite loss or parameters in any run stops all.
  """
  s = schedule
  managers, state, start, writers_, outs = _open(workdirs, state, s, configs, split, join,
                                                 metric)
  it, preemption, pending, timer = batches(start, s.total), _Preemption(), [], time.perf_counter()
  names = [os.path.basename(os.path.normpath(w)) for w in workdirs] if configs[1:] else None
  bar = tqdm.tqdm(total=s.total, initial=start, desc=desc, disable=jax.process_index() != 0,
                  dynamic_ncols=True)

  def save(step: int, states: Sequence[Any], evals: list | None) -> None:
    for i, manager in enumerate(managers):
      _check_finite(states[i], step, names and names[i])
      checkpoint.save(manager, step, states[i], {'config': configs[i]},
                      {checkpoint.METRIC: evals[i][metric]} if evals else None)

  try:
    for step in range(start + 1, s.total + 1):
      if preemption.reached(step - 1):
        _flush(pending, writers_, bar, timer, s.batch_size, names)
        if any(step - 1 not in m.all_steps() for m in managers):  # Not just saved.
          save(step - 1, split(state), None)
        return _preempted(managers, outs, split(state), step - 1)
      state, metrics = step_fn(state, next(it))
      pending.append((step, metrics))
      is_eval = step % s.eval_every == 0 or step == s.total or step in s.eval_at
      is_ckpt = step % s.checkpoint_every == 0 or step == s.total or step in s.keep_at
      if step % s.log_every == 0 or is_eval or is_ckpt:
        timer = _flush(pending, writers_, bar, timer, s.batch_size, names)
      if is_eval:
        _evaluate_runs(outs, split(state), step, evaluate, writers_, bar, metric, names)
      if is_ckpt:
        save(step, split(state), [out.last_eval for out in outs] if is_eval else None)
      if is_eval or is_ckpt:
        timer = time.perf_counter()  # Throughput counts training steps only.
  finally:
    _close(bar, preemption, managers, writers_)
  return _final(outs, split(state), evaluate, s.total)


def _close(bar: Any, preemption: '_Preemption', managers: Sequence[Any],
           writers_: Sequence[writers.MetricWriter]) -> None:
  """Ends a loop however it stops: the bar, the SIGTERM handler, pending saves, the files."""
  bar.close()
  preemption.restore()
  for manager in managers:
    manager.wait_until_finished()
    manager.close()
  for writer in writers_:
    writer.close()


def _open(workdirs: Sequence[str], state: Any, s: Schedule, configs: Sequence[dict[str, Any]],
          split: Callable[[Any], Sequence[Any]], join: Callable[[Sequence[Any]], Any],
          metric: str) -> tuple[list[Any], Any, int, list[writers.MetricWriter], list[Outcome]]:
  """The runs' checkpoint managers, the group state restored at the newest common step (or
  as given), that step (0: fresh), the metric writers and the outcomes so far."""
  lead = jax.process_index() == 0
  managers = [checkpoint.make_manager(w, s.keep_checkpoints, s.keep_at) for w in workdirs]
  restored = checkpoint.restore_common(managers, split(state))
  start = 0
  if restored is not None:
    states, start = restored
    state = join(states)
  writers_ = []
  for workdir, config in zip(workdirs, configs):
    if lead:
      writers.write_json(os.path.join(workdir, 'config.json'), config)
    writers_.append(writers.MetricWriter(workdir, resume_step=start, enabled=lead))
  outs = [Outcome(None, evals=[_scalars(r) for r in w.rows('test')]) for w in writers_]
  for out in outs:  # After a resume, the best so far counts the evaluations before it.
    out.best = dict(max(out.evals, key=lambda r: r[metric])) if out.evals else None
  return managers, state, start, writers_, outs


def _evaluate_runs(outs: list[Outcome], states: Sequence[Any], step: int,
                   evaluate: Callable[[int, Any], dict[str, Any]],
                   writers_: Sequence[writers.MetricWriter], bar: Any, metric: str,
                   names: Sequence[str] | None) -> None:
  """Evaluates each run at ``step``: its row in metrics.jsonl, its curve, its best."""
  for i, (out, run_state) in enumerate(zip(outs, states)):
    out.last_eval = dict(evaluate(i, run_state), step=step)
    writers_[i].write(step, 'test', out.last_eval)
    out.evals.append(_scalars(out.last_eval))
    bar.write(f'step {step}: {names[i] + " " if names else ""}{metric} '
              f'{out.last_eval[metric]:.4f}')
    if out.best is None or out.last_eval[metric] > out.best[metric]:
      out.best = dict(out.last_eval)


def _preempted(managers: Sequence[Any], outs: list[Outcome], states: Sequence[Any],
               step: int) -> list[Outcome]:
  """The outcomes of runs stopped by SIGTERM after ``step``, once its checkpoints are on disk."""
  for manager in managers:
    manager.wait_until_finished()
  print(f'SIGTERM: saved a checkpoint at step {step}; exiting.', flush=True)
  for out, run_state in zip(outs, states):
    out.state, out.preempted_at_step = run_state, step
  return outs


def _final(outs: list[Outcome], states: Sequence[Any],
           evaluate: Callable[[int, Any], dict[str, Any]], total: int) -> list[Outcome]:
  """The outcomes of finished runs; a run resumed after its final step is evaluated now."""
  for i, (out, run_state) in enumerate(zip(outs, states)):
    out.state = run_state
    if out.last_eval is None:
      out.last_eval = dict(evaluate(i, run_state), step=total)
      if not out.evals or out.evals[-1]['step'] != total:
        out.evals.append(_scalars(out.last_eval))
    out.best = out.best or out.last_eval
  return outs


def _scalars(row: dict[str, Any]) -> dict[str, Any]:
  """An evaluation's numbers (step included), without lists, dicts and the split."""
  return {k: v for k, v in row.items() if k != 'split' and isinstance(v, (int, float))}


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _check_finite(state: Any, step: int, name: str | None = None) -> None:
  """Refuses to checkpoint a state that step `step` made non-finite (its loss,
  computed before the update, can still be finite), so resuming never starts from it."""
  if not bool(_all_finite((state.params, state.batch_stats))):
    raise FloatingPointError(f'Non-finite parameters after step {step}{_of(name)}; stopping. '
                             'The last checkpoint before it is kept.')


def _of(name: str | None) -> str:
  return f' in run {name}' if name else ''


def _flush(pending: list, writers_: Sequence[writers.MetricWriter], bar, timer: float,
           batch_size: int, names: Sequence[str] | None) -> float:
  """Fetches the pending step metrics, stops on a non-finite loss, logs each run's mean."""
  if not pending:
    return timer
  steps = [s for s, _ in pending]
  values = jax.device_get([m for _, m in pending])
  num = len(writers_)
  now = time.perf_counter()
  for i, writer in enumerate(writers_):
    run = [{k: np.reshape(v, (num,))[i] for k, v in m.items()} for m in values]
    for s, m in zip(steps, run):
      if not np.isfinite(m['loss']):
        raise FloatingPointError(f'Non-finite training loss ({m["loss"]}) at step {s}'
                                 f'{_of(names and names[i])}; stopping. '
                                 'The last checkpoint before it is kept.')
    row = {k: float(np.mean([m[k] for m in run])) for k in run[0]}
    row['images_per_s'] = len(steps) * batch_size / max(now - timer, 1e-9)  # This run's.
    writer.write(steps[-1], 'train', row)
    if i == 0:
      bar.update(steps[-1] - bar.n)
      postfix = {k: f'{row[k]:.3f}' for k in ('loss', 'accuracy') if k in row}
      bar.set_postfix(**postfix, img_s=f'{row["images_per_s"]:.0f}')
  pending.clear()
  return now
