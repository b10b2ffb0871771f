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
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from gpjax import checkpoint, writers


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
  """Trains ``state`` to ``schedule.total`` steps. One function, so that what happens at a
  step (preemption check, step, log, evaluation, checkpoint) reads in its order, top to bottom.

  Args:
    workdir: where checkpoints/, metrics.jsonl, TensorBoard events and
      config.json go.
    state: the initial state (replicated); replaced by the newest checkpoint.
    schedule: steps between logs, evaluations and checkpoints.
    config: the run's config as a dict, saved as config.json and with each
      checkpoint.
    step_fn: (state, host batch) -> (state, metrics with a 'loss').
    batches: (start step, number of steps) -> iterator of host batches.
    evaluate: state -> test metrics, ``metric`` among them (higher is better).
    metric: the evaluation metric that picks the best checkpoint.
    desc: the progress bar's label.
  """
  s = schedule
  lead = jax.process_index() == 0
  manager = checkpoint.make_manager(workdir, s.keep_checkpoints)
  restored = checkpoint.restore_latest(manager, state)
  start = 0
  if restored is not None:
    state, start = restored
  if lead:
    writers.write_json(os.path.join(workdir, 'config.json'), config)
  writer = writers.MetricWriter(workdir, resume_step=start, enabled=lead)
  it = batches(start, s.total)
  preemption = _Preemption()
  out = Outcome(state, evals=[_scalars(r) for r in writer.rows('test')])
  pending, meta = [], {'config': config}
  timer = time.perf_counter()
  bar = tqdm.tqdm(total=s.total, initial=start, desc=desc, disable=not lead, dynamic_ncols=True)
  try:
    for step in range(start + 1, s.total + 1):
      if preemption.reached(step - 1):
        _flush(pending, writer, bar, timer, s.batch_size)
        if step - 1 not in manager.all_steps():  # Orbax refuses to save a step twice.
          _check_finite(state, step - 1)
          checkpoint.save(manager, step - 1, state, meta)
        manager.wait_until_finished()
        print(f'SIGTERM: saved a checkpoint at step {step - 1}; exiting.', flush=True)
        out.state, out.preempted_at_step = state, step - 1
        return out
      state, metrics = step_fn(state, next(it))
      pending.append((step, metrics))
      is_eval = step % s.eval_every == 0 or step == s.total or step in s.eval_at
      is_ckpt = step % s.checkpoint_every == 0 or step == s.total
      if step % s.log_every == 0 or is_eval or is_ckpt:
        timer = _flush(pending, writer, bar, timer, s.batch_size)
      if is_eval:
        out.last_eval = dict(evaluate(state), step=step)
        writer.write(step, 'test', out.last_eval)
        out.evals.append(_scalars(out.last_eval))
        bar.write(f'step {step}: {metric} {out.last_eval[metric]:.4f}')
        if out.best is None or out.last_eval[metric] > out.best[metric]:
          out.best = dict(out.last_eval)
      if is_ckpt:
        _check_finite(state, step)
        checkpoint.save(manager, step, state, meta,
                        {checkpoint.METRIC: out.last_eval[metric]} if is_eval else None)
      if is_eval or is_ckpt:
        timer = time.perf_counter()  # Throughput counts training steps only.
  finally:
    bar.close()
    preemption.restore()
    manager.wait_until_finished()
    manager.close()
    writer.close()
  out.state = state
  if out.last_eval is None:  # Resumed after the final step: evaluate the restored state.
    out.last_eval = dict(evaluate(state), step=s.total)
    if not out.evals or out.evals[-1]['step'] != s.total:
      out.evals.append(_scalars(out.last_eval))
  out.best = out.best or out.last_eval
  return out


def _scalars(row: dict[str, Any]) -> dict[str, Any]:
  """An evaluation's numbers (step included), without lists, dicts and the split."""
  return {k: v for k, v in row.items() if k != 'split' and isinstance(v, (int, float))}


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _check_finite(state: Any, step: int) -> None:
  """Refuses to checkpoint a state that step `step` made non-finite (its loss,
  computed before the update, can still be finite), so resuming never starts from it."""
  if not bool(_all_finite((state.params, state.batch_stats))):
    raise FloatingPointError(f'Non-finite parameters after step {step}; stopping. '
                             'The last checkpoint before it is kept.')


def _flush(pending: list, writer: writers.MetricWriter, bar, timer: float,
           batch_size: int) -> float:
  """Fetches the pending step metrics, stops on a non-finite loss, logs the mean."""
  if not pending:
    return timer
  steps = [s for s, _ in pending]
  values = jax.device_get([m for _, m in pending])
  for s, m in zip(steps, values):
    if not np.isfinite(m['loss']):
      raise FloatingPointError(f'Non-finite training loss ({m["loss"]}) at step {s}; stopping. '
                               'The last checkpoint before it is kept.')
  now = time.perf_counter()
  row = {k: float(np.mean([m[k] for m in values])) for k in values[0]}
  row['images_per_s'] = len(steps) * batch_size / max(now - timer, 1e-9)
  writer.write(steps[-1], 'train', row)
  bar.update(steps[-1] - bar.n)
  postfix = {k: f'{row[k]:.3f}' for k in ('loss', 'accuracy') if k in row}
  bar.set_postfix(**postfix, img_s=f'{row["images_per_s"]:.0f}')
  pending.clear()
  return now
