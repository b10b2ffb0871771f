"""Orbax checkpoints in ``workdir/checkpoints``: keep the newest n, the best and the steps
asked for (``train.keep_at``: probes measure a run over training from them).

A state is saved packed: its leaves concatenated into one 1-D array per dtype, their paths,
shapes and dtypes in the ``meta`` item. Orbax handles arrays one by one: for the 229 arrays of
a width-8 ResNet-18's state a save took 673 ms leaf by leaf and 62 ms packed, a restore 799
and 44 ms (configs/bench/checkpoint.py). Checkpoints written leaf by leaf still load.

Saves are asynchronous; ``close`` waits for them. A process killed mid-save
leaves a ``*.orbax-checkpoint-tmp`` folder that Orbax ignores, so the previous
checkpoint is used; a newest checkpoint that fails to load is skipped with a
warning and the one before it is restored.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Iterator, Sequence

import jax
import numpy as np
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


def _name(key: Any) -> str:
  """A path entry as Orbax names it: a dict key, a field name or a sequence index."""
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _host(x: Any) -> np.ndarray:
  """This process's copy of a replicated leaf."""
  if isinstance(x, jax.Array):
    if not x.is_fully_replicated:
      raise ValueError(f'checkpoints hold replicated states; a leaf is sharded as {x.sharding}.')
    return np.asarray(x.addressable_data(0))
  return np.asarray(x)


def _placed(host: np.ndarray, sharding: Any) -> jax.Array:
  """``host`` as a jax.Array on ``sharding`` (replicated: every device gets all of it)."""
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _sharding(leaves: Sequence[Any]) -> Any:
  """The sharding of the first jax.Array among ``leaves`` (a state's are all replicated),
  or None when none is one."""
  return next((x.sharding for x in leaves if isinstance(x, jax.Array)), None)


def _meta(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The ``meta`` item of the checkpoint at ``step`` (its ``layout`` when packed)."""
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']


def _read_state(manager: ocp.CheckpointManager, step: int, abstract: Any) -> Any:
  """The ``state`` item at ``step`` in the shapes, dtypes and shardings of ``abstract``."""
  return manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract)))['state']


def _dtype(x: Any) -> str:
  return np.dtype(x.dtype).name if hasattr(x, 'dtype') else np.asarray(x).dtype.name


def _layout(state: Any) -> list[list[Any]]:
  """[path, shape, dtype] of each leaf of ``state``, in order (the paths as Orbax names them:
  ``['params', 'head', 'kernel']``, ``['opt_state', '0', 'mu', ...]``)."""
  return [[[_name(k) for k in path], list(np.shape(x)), _dtype(x)]
          for path, x in jax.tree.leaves_with_path(state)]


def _pack(state: Any) -> dict[str, Any]:
  """The leaves of ``state`` concatenated, one 1-D array per dtype, on the leaves' sharding
  (replicated over the mesh) when they are jax.Arrays."""
  leaves = jax.tree.leaves(state)
  packs: dict[str, list[np.ndarray]] = {}
  for x in leaves:
    packs.setdefault(_dtype(x), []).append(_host(x).ravel())
  sharding = _sharding(leaves)
  out = {}
  for dtype, parts in packs.items():
    flat = np.concatenate(parts)
    out[dtype] = flat if sharding is None else _placed(flat, sharding)
  return out


def _packed_abstract(entries: list[list[Any]], sharding: Any) -> dict[str, Any]:
  """The 1-D arrays that hold the leaves of ``entries`` (a `_layout`), as restore targets."""
  sizes: dict[str, int] = {}
  for _, shape, dtype in entries:
    sizes[dtype] = sizes.get(dtype, 0) + math.prod(shape)
  if sharding is None:
    return {d: np.zeros(n, d) for d, n in sizes.items()}
  return {d: jax.ShapeDtypeStruct((n,), d, sharding=sharding) for d, n in sizes.items()}


def _read_packed(manager: ocp.CheckpointManager, step: int, entries: list[list[Any]],
                 sharding: Any) -> list[np.ndarray]:
  """The leaves (host arrays) of ``entries`` (a `_layout`) of the packed state at ``step``,
  read onto ``sharding`` and cut from their dtype's array."""
  host = {d: _host(a) for d, a in
          _read_state(manager, step, _packed_abstract(entries, sharding)).items()}
  offsets = dict.fromkeys(host, 0)
  leaves = []
  for _, shape, dtype in entries:
    n = math.prod(shape)
    leaves.append(host[dtype][offsets[dtype]:offsets[dtype] + n].reshape(shape))
    offsets[dtype] += n
  return leaves


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict[str, Any],
         metrics: dict[str, float] | None = None) -> None:
  """Saves ``state`` (packed; its `_layout` joins ``meta``) at ``step``, replacing a checkpoint
  already there: after a resume, the only such one is a newer checkpoint that
  `restore_common` skipped (unreadable, or newer than the other runs' of its group; Orbax
  refuses to save a step twice). A failed save (a full disk) raises OSError naming the last
  good step."""
  try:
    if step in manager.all_steps():
      manager.wait_until_finished()
      manager.delete(step)
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_pack(state)),
        meta=ocp.args.JsonSave({**meta, 'layout': _layout(state)})), metrics=metrics, force=True)
  except OSError as e:  # A full or read-only disk: stop now, the run resumes from the last.
    kept = [s for s in manager.all_steps() if s != step]
    raise OSError(f'saving the checkpoint at step {step} failed ({e}); the last good one is '
                  f'step {max(kept) if kept else "none"}: free space and rerun to resume '
                  'from it.') from e


class LayoutError(ValueError):
  """A checkpoint whose leaves are not the state's."""


def _fits(saved: list[list[Any]], want: list[list[Any]]) -> None:
  """LayoutError naming the missing and unexpected leaves when a checkpoint's layout is not
  the target's."""
  if saved == want:
    return
  names = {'/'.join(p): (s, d) for p, s, d in saved}
  wants = {'/'.join(p): (s, d) for p, s, d in want}
  missing = sorted(set(wants) - set(names))
  unexpected = sorted(set(names) - set(wants))
  changed = sorted(k for k in set(names) & set(wants) if names[k] != wants[k])
  raise LayoutError(f'the checkpoint does not fit the state: missing {missing}, unexpected '
                    f'{unexpected}, other shape or dtype {changed}')


def _restore_into(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
  """The state at ``step`` in the structure, shapes and shardings of ``target``."""
  want = _layout(target)
  leaves = jax.tree.leaves(target)
  sharding = _sharding(leaves)
  meta = _meta(manager, step)
  if 'layout' not in meta:  # Written leaf by leaf.
    return _read_state(manager, step, jax.tree.map(ocp.utils.to_shape_dtype_struct, target))
  _fits(meta['layout'], want)
  values = [_placed(v, x.sharding) if isinstance(x, jax.Array) else v
            for v, x in zip(_read_packed(manager, step, want, sharding), leaves)]
  return jax.tree.unflatten(jax.tree.structure(target), values)


def _warn_fallback(step: int, error: Exception) -> None:
  """The one line a reader prints when the checkpoint at ``step`` does not load and it falls
  back to the one before (a layout that does not fit is named leaf by leaf)."""
  why = f'{error}' if isinstance(error, LayoutError) else type(error).__name__
  print(f'WARNING: checkpoint at step {step} could not be restored ({why}); falling back to '
        'the previous one.', flush=True)


def restore_common(managers: Sequence[ocp.CheckpointManager],
                   targets: Sequence[Any]) -> tuple[list[Any], int] | None:
  """Restores, for runs trained together, the newest step that every manager holds and
  that loads for all, each into the shapes/shardings of its ``target``.

  Returns ``([state per manager], step)``, or None when they have no common step (a group
  with no common checkpoint starts afresh); FileNotFoundError when they have some and none
  loads.
  """
  common = set.intersection(*(set(m.all_steps()) for m in managers))
  for step in sorted(common, reverse=True):
    try:
      with _quiet():
        states = [_restore_into(m, step, t) for m, t in zip(managers, targets)]
      return states, step
    except Exception as e:  # A corrupt or partial checkpoint: fall back to the previous one.
      _warn_fallback(step, e)
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


def _restore_raw_step(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The state at ``step`` as nested dicts of host arrays, on one local device's terms."""
  # Onto one local device: without a target Orbax reuses the saved shardings
  # and refuses a checkpoint written on other devices (e.g. 8 of them).
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  meta = _meta(manager, step)
  if 'layout' not in meta:  # Written leaf by leaf.
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            manager.item_metadata(step)['state'])
    return jax.device_get(_read_state(manager, step, abstract))
  entries = meta['layout']
  tree: dict[str, Any] = {}
  for (path, _, _), leaf in zip(entries, _read_packed(manager, step, entries, device)):
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = leaf
  return tree


def restore_raw(workdir: str, step: int | None = None) -> dict[str, Any]:
  """Loads a workdir's checkpoint at ``step`` (None: the newest) as nested dicts of numpy
  arrays, keyed as Orbax names the state's paths (a tuple's entries '0', '1', ...), e.g.
  ``{'params': ..., 'batch_stats': ..., 'step': ...}`` for probes."""
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
    for step in steps:  # The newest that loads, as training resumes (`restore_common`).
      try:
        return _restore_raw_step(manager, step)
      except Exception as e:  # A corrupt or partial checkpoint: fall back to the previous one.
        if step == steps[-1]:
          raise FileNotFoundError(f'{directory}: no checkpoint could be restored (steps '
                                  f'{sorted(steps)}; the last failed with {type(e).__name__}).'
                                  ) from None
        _warn_fallback(step, e)
