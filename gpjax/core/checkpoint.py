"""Orbax checkpoints in ``workdir/checkpoints``: keep the newest n, the best and the steps
asked for (``train.keep_at``: probes measure a run over training from them).

Saves are asynchronous; ``close`` waits for them. A process killed mid-save
leaves a ``*.orbax-checkpoint-tmp`` folder that Orbax ignores, so the previous
checkpoint is used; a newest checkpoint that fails to load is skipped with a
warning and the one before it is restored.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Sequence

import jax
from absl import logging

from gpjax import lazy

ocp = lazy.Module('orbax.checkpoint')  # 1.5 s to import: only when a job touches checkpoints.
checkpoint_managers = lazy.Module('orbax.checkpoint.checkpoint_managers')

METRIC = 'test_accuracy'


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
  """Orbax's own error logs off while a restore may fail: the fallback says it in one line."""
  level = logging.get_verbosity()
  logging.set_verbosity(logging.FATAL)
  try:
    yield
  finally:
    logging.set_verbosity(level)


def make_manager(workdir: str, keep: int, keep_at: Sequence[int] = ()
                 ) -> ocp.CheckpointManager:
  """Keeps the ``keep`` newest checkpoints, the best by test accuracy and those at the steps
  ``keep_at``."""
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=keep),
      checkpoint_managers.BestN(get_metric_fn=lambda m: m[METRIC], n=1,
                                keep_checkpoints_without_metrics=False),
      checkpoint_managers.CustomSteps(steps=list(keep_at)),
  ])
  options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True)
  with _quiet():  # It reads every step's metadata; a corrupt one is `restore_common`'s to say.
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), 'checkpoints'),
                                 options=options, item_names=('state', 'meta'))


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict[str, Any],
         metrics: dict[str, float] | None = None) -> None:
  """Saves ``state`` at ``step``, replacing a checkpoint already there: after a
  resume, the only such one is a newer checkpoint that `restore_common` skipped
  (unreadable, or newer than the other runs' of its group; Orbax refuses to save a
  step twice). A failed save (a full disk) raises OSError naming the last good step."""
  try:
    if step in manager.all_steps():
      manager.wait_until_finished()
      manager.delete(step)
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)),
                 metrics=metrics, force=True)
  except OSError as e:  # A full or read-only disk: stop now, the run resumes from the last.
    kept = [s for s in manager.all_steps() if s != step]
    raise OSError(f'saving the checkpoint at step {step} failed ({e}); the last good one is '
                  f'step {max(kept) if kept else "none"}: free space and rerun to resume '
                  'from it.') from e


def restore_common(managers: Sequence[ocp.CheckpointManager],
                   targets: Sequence[Any]) -> tuple[list[Any], int] | None:
  """Restores, for runs trained together, the newest step that every manager holds and
  that loads for all, each into the shapes/shardings of its ``target``.

  Returns ``([state per manager], step)``, or None when they have no common step (a group
  with no common checkpoint starts afresh); FileNotFoundError when they have some and none
  loads.
  """
  abstracts = [jax.tree.map(ocp.utils.to_shape_dtype_struct, t) for t in targets]
  common = set.intersection(*(set(m.all_steps()) for m in managers))
  for step in sorted(common, reverse=True):
    try:
      with _quiet():
        states = [m.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(a)))
                  ['state'] for m, a in zip(managers, abstracts)]
      return states, step
    except Exception as e:  # A corrupt or partial checkpoint: fall back to the previous one.
      print(f'WARNING: checkpoint at step {step} could not be restored '
            f'({type(e).__name__}); falling back to the previous one.', flush=True)
  if common:  # Checkpoints there, none readable: never train afresh over them.
    raise FileNotFoundError(f'no checkpoint of steps {sorted(common)} could be restored; move '
                            'the run aside (--restart) to train it again from step 0.')
  return None


def _directory(workdir: str) -> str:
  """``workdir/checkpoints``; FileNotFoundError naming the workdir when it is missing."""
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'workdir {workdir!r} holds no checkpoints/ folder; train a model '
                            'there first.')
  return directory


def saved_steps(workdir: str) -> list[int]:
  """The steps of a workdir's complete checkpoints, ascending."""
  with ocp.CheckpointManager(_directory(workdir), item_names=('state', 'meta')) as manager:
    return sorted(manager.all_steps())


def restore_raw(workdir: str, step: int | None = None) -> dict[str, Any]:
  """Loads a workdir's checkpoint at ``step`` (None: the newest) as a plain tree of numpy
  arrays, e.g. ``{'params': ..., 'batch_stats': ..., 'step': ...}`` for probes."""
  directory = _directory(workdir)
  handlers = {'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()}
  with _quiet(), ocp.CheckpointManager(directory, item_names=('state', 'meta'),
                                       item_handlers=handlers) as manager:
    if step is not None and step not in manager.all_steps():
      raise FileNotFoundError(f'{directory} holds no checkpoint at step {step}; it holds steps '
                              f'{sorted(manager.all_steps())} (train.keep_at keeps steps).')
    steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
    if not steps:
      raise FileNotFoundError(f'{directory} holds no complete checkpoint.')
    # Onto one local device: without a target Orbax reuses the saved shardings
    # and refuses a checkpoint written on other devices (e.g. 8 of them).
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    for step in steps:  # The newest that loads, as training resumes (`restore_common`).
      try:
        abstract = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
            manager.item_metadata(step)['state'])
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
        break
      except Exception as e:  # A corrupt or partial checkpoint: fall back to the previous one.
        if step == steps[-1]:
          raise FileNotFoundError(f'{directory}: no checkpoint could be restored (steps '
                                  f'{sorted(steps)}; the last failed with {type(e).__name__}).'
                                  ) from None
        print(f'WARNING: checkpoint at step {step} could not be restored '
              f'({type(e).__name__}); falling back to the previous one.', flush=True)
  return jax.device_get(restored['state'])
