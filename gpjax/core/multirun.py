"""Several seeds of one config trained in one program: the runs of a study cell.

Runs that differ only in ``seed`` share their data, model, optimiser and step shapes, so one
compiled step can advance all R of them (`train_group`). Each run keeps its own keys (its
``TrainState.seed``), its own data order, workdir, checkpoints, metrics and results.json, as
`trainer.train_and_evaluate` would write them alone; a run trained in a group is loaded,
probed and resumed as any other. Modes:

- ``sequential``: one run after another (`trainer.train_run`), sharing one compiled step.
- ``interleave``: that one compiled step called for each run in turn at every step: the
  programs and numbers of sequential runs, the loop (evaluations, checkpoints) shared.
- ``unroll``: one jitted step holding R copies of the per-run step (R independent
  subgraphs that XLA schedules together); the same numbers as sequential runs.
- ``vmap``: ``jit(vmap(step))`` over a leading run axis of the states and batches: batched
  kernels, the fastest where one run leaves the device idle (GPU/TPU at small batches); on
  XLA:CPU per-run convolutions become slow grouped convolutions.
- ``map``: ``lax.map`` over the run axis: one compiled body run R times (smallest program).

``auto`` is ``interleave`` on CPU and ``vmap`` elsewhere (`python -m gpjax.bench seeds` measures
which wins where).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax

from gpjax.core import loop
from gpjax.core import parallel
from gpjax.core import trainer
from gpjax.core.task import Task
from gpjax.errors import ConfigError

MODES = ('auto', 'sequential', 'interleave', 'unroll', 'vmap', 'map')
_TUPLES = ('interleave', 'unroll')  # Modes whose group state and batch are tuples of R.


def check_mode(mode: str) -> None:
  """Raises ConfigError unless ``mode`` is one of `MODES` (without touching the backend, so
  configs can be checked before ``jax.distributed.initialize``)."""
  if mode not in MODES:
    raise ConfigError(f'config.study.train_seeds={mode!r} is not one of {MODES}.')


def resolve(mode: str) -> str:
  """``mode`` with 'auto' replaced by this backend's choice ('interleave' on CPU, else
  'vmap')."""
  check_mode(mode)
  if mode == 'auto':
    return 'interleave' if jax.default_backend() == 'cpu' else 'vmap'
  return mode


def without_seed(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as a dict, ``seed`` left out: equal for the runs of one group."""
  return {k: v for k, v in config.to_dict().items() if k != 'seed'}


def check_group(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """Raises ConfigError unless the configs differ in ``seed`` alone (and not there)."""
  first = without_seed(configs[0])
  for c in configs[1:]:
    other = without_seed(c)
    if other != first:
      diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
      raise ConfigError(f'runs trained together must differ in seed only; these differ in '
                        f'{diff}.')
  seeds = [c.seed for c in configs]
  if len(set(seeds)) != len(seeds):
    raise ConfigError(f'runs trained together need distinct seeds; got {seeds}.')


def join_states(mode: str, states: Sequence[Any]) -> Any:
  """The group state of R run states: a tuple (interleave, unroll) or stacked along a leading
  run axis."""
  return tuple(states) if mode in _TUPLES else jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def split_states(mode: str, state: Any, num: int) -> list[Any]:
  """The R run states of a group state (`join_states` undone)."""
  if mode in _TUPLES:
    return list(state)
  return [jax.tree.map(lambda x, i=i: x[i], state) for i in range(num)]


def batch_axis(mode: str) -> int:
  """The axis of a group batch that the ``data`` mesh axis splits (1 below a run axis)."""
  return 0 if mode in _TUPLES else 1


def join_batches(mode: str, batches: Sequence[Any]) -> Any:
  """The group host batch of R runs' host batches: a tuple (interleave, unroll) or (R, B, ...)
  arrays."""
  return tuple(batches) if mode in _TUPLES else jax.tree.map(lambda *xs: np.stack(xs), *batches)


def group_step(train_step: Callable, mesh: jax.sharding.Mesh, mode: str, num: int) -> Callable:
  """The step of R = ``num`` runs from the per-device ``train_step(state, batch)``: jitted
  (unroll, vmap, map), or R calls of one jitted run's step (interleave).

  Returns:
    (group state, group batch) -> (group state, metrics of shape (R,)). interleave, unroll: the
    group state is a tuple of R states and the batch a tuple of R global batches (interleave's
    metrics are R-tuples of scalars); vmap/map: one state with a leading run axis on every
    leaf and a (R, B, ...) batch.
  """
  if mode == 'interleave':
    single = parallel.shard_step(train_step, mesh, outputs=2, donate=True)

    def interleaved(states, batches):
      outs = [single(s, b) for s, b in zip(states, batches)]
      return tuple(o[0] for o in outs), jax.tree.map(lambda *xs: xs, *(o[1] for o in outs))
    return interleaved

  def unrolled(states, batches):
    outs = [train_step(s, b) for s, b in zip(states, batches)]
    return tuple(o[0] for o in outs), jax.tree.map(lambda *xs: jnp.stack(xs), *(o[1] for o in outs))

  def mapped(state, batch):
    return lax.map(lambda sb: train_step(*sb), (state, batch))

  fn = {'unroll': unrolled, 'vmap': jax.vmap(train_step), 'map': mapped}[mode]
  return parallel.shard_step(fn, mesh, outputs=2, donate=True,
                             batch_axis=batch_axis(mode))


def train_group(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
                task: Task, mode: str = 'auto') -> list[dict[str, Any]]:
  """Trains the runs ``configs`` (equal but for their seeds) in ``workdirs``, resuming from
  the newest step all their checkpoints hold, and returns each run's results.json contents
  (or ``{'preempted_at_step': s}``), as `trainer.train_and_evaluate` per run would."""
  if len(configs) != len(workdirs):
    raise ValueError(f'{len(configs)} configs for {len(workdirs)} workdirs.')
  check_group(configs)
  mode, num, setup = resolve(mode), len(configs), trainer.prepare(configs[0], task)
  if mode == 'sequential' or num == 1:
    return [trainer.train_run(setup, c, w) for c, w in zip(configs, workdirs)]
  for w in workdirs:
    os.makedirs(w, exist_ok=True)
  states = [trainer.initial_state(setup, c) for c in configs]
  step = group_step(setup.train_step, setup.mesh, mode, num)
  run_batches = [trainer.host_batches(setup, c) for c in configs]

  def batches(start: int, total: int) -> Iterator[Any]:
    its = [b(start, total) for b in run_batches]
    try:
      for group in zip(*its):
        yield join_batches(mode, group)
    finally:  # Cancels the runs' read-ahead.
      for it in its:
        it.close()

  outs = loop.run_group(
      workdirs, join_states(mode, states), schedule=setup.schedule,
      configs=[c.to_dict() for c in configs],
      step_fn=lambda state, batch: step(state, parallel.to_global(setup.mesh, batch,
                                                                 batch_axis(mode))),
      batches=batches, evaluate=lambda i, s: trainer.run_eval(setup, configs[i], s),
      metric=task.metric, desc=f'{task.description(configs[0])} x{num} ({mode})',
      split=lambda state: split_states(mode, state, num),
      join=lambda states: join_states(mode, states))
  return [trainer.finish(setup, c, w, out) for c, w, out in zip(configs, workdirs, outs)]
