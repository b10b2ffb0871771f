"""The training core every task shares: state, optimiser, schedule and the job that trains,
evaluates and writes ``results.json``.

A task (`gpjax.core.task.Task`: `gpjax.tasks.classification`,
`gpjax.tasks.segmentation`) gives only what differs: data, model, steps, summaries.
Batches are pure functions of
(seed, step) (`gpjax.data.batching`); losses and BatchNorm statistics are
averaged over the axis, so a run computes the same numbers on 1 or N devices
and hosts (up to float rounding).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, Iterator, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from flax import traverse_util

from gpjax.core import loop
from gpjax.core import parallel
from gpjax.core import writers
from gpjax.core.task import Task
from gpjax.data import batching


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  seed: jax.Array  # config.seed as data: one compiled step serves every seed.
  params: Any
  batch_stats: Any
  opt_state: Any


def replace_variables(variables: Any, weights: Any) -> Any:
  """``variables`` with every leaf of ``weights`` put in its place.

  Args:
    variables: ``{'params', 'batch_stats'}`` trees, e.g. of ``model.init``.
    weights: subtrees of the same layout, e.g. ``{'params': {'backbone': ...},
      'batch_stats': {'backbone': ...}}``; every leaf must exist in ``variables``
      with the same shape.

  Returns:
    A new tree; leaves of ``weights`` cast to the dtype of those they replace.
  """
  flat = traverse_util.flatten_dict(variables)
  for path, value in traverse_util.flatten_dict(weights).items():
    if path not in flat or jnp.shape(flat[path]) != jnp.shape(value):
      want = jnp.shape(flat[path]) if path in flat else 'nothing'
      raise ValueError(f'weights {"/".join(path)}: the model holds {want} there, the weights '
                       f'give shape {jnp.shape(value)}.')
    flat[path] = jnp.asarray(value, flat[path].dtype)
  return traverse_util.unflatten_dict(flat)


def create_train_state(seed: int | jax.Array, model: nn.Module, tx: optax.GradientTransformation,
                       input_shape: tuple[int, ...], weights: Any = None) -> TrainState:
  """Initialises parameters (float32, from ``key(seed)``) for inputs of shape (H, W, C); then
  the leaves of ``weights`` (see `replace_variables`), if given, replace theirs."""
  seed = jnp.asarray(seed, jnp.int32)
  variables = model.init(jax.random.key(seed), jnp.zeros((1, *input_shape), jnp.float32),
                         train=False)
  if weights is not None:
    variables = replace_variables(dict(variables), weights)
  return TrainState(step=jnp.zeros((), jnp.int32), seed=seed, params=variables['params'],
                    batch_stats=variables['batch_stats'], opt_state=tx.init(variables['params']))


def init_fn(model: nn.Module, tx: optax.GradientTransformation, input_shape: tuple[int, ...],
            mesh: jax.sharding.Mesh) -> Callable[..., TrainState]:
  """`create_train_state` jitted, its state replicated over ``mesh``: (seed, weights=None) ->
  TrainState, one compiled program for every seed (``weights``, e.g. a pretrained backbone,
  enter as arguments, not as constants). On CPU the init program is compiled without backend
  optimisation: it runs once per run, and XLA:CPU otherwise spends seconds optimising the
  random initialisers (7.9 s vs 1.4 s for a ResNet-18)."""
  options = {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else None
  init = jax.jit(functools.partial(create_train_state, model=model.clone(bn_axis_name=None),
                                   tx=tx, input_shape=input_shape),
                 out_shardings=parallel.replicated(mesh), compiler_options=options)
  return lambda seed, weights=None: init(jnp.asarray(seed, jnp.int32), weights=weights)


def init_state(seed: int, model: nn.Module, tx: optax.GradientTransformation,
               input_shape: tuple[int, ...], mesh: jax.sharding.Mesh,
               weights: Any = None) -> TrainState:
  """The state of `init_fn` for one ``seed``."""
  return init_fn(model, tx, input_shape, mesh)(seed, weights)


def apply_gradients(state: TrainState, tx: optax.GradientTransformation, grads: Any,
                    batch_stats: Any) -> TrainState:
  """The optimiser update and the new BatchNorm statistics: the next state."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=batch_stats, opt_state=opt_state)


def _transform(t: ml_collections.ConfigDict, lr: float | Callable[[Any], Any], *,
               adam_decay: bool) -> optax.GradientTransformation:
  if t.optimizer == 'adam' and not adam_decay:
    return optax.adam(lr, b1=t.b1, b2=t.b2)
  if t.optimizer in ('adam', 'adamw'):
    return optax.adamw(lr, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay)
  return optax.chain(optax.add_decayed_weights(t.weight_decay),
                     optax.sgd(lr, momentum=t.momentum))


def create_optimizer(t: ml_collections.ConfigDict,
                     total_steps: int) -> optax.GradientTransformation:
  """Adam, AdamW or SGD with momentum and weight decay, from a config's ``train`` fields.

  A config without ``schedule`` (classification) gets one constant rate for all
  parameters. A config with ``schedule`` and ``backbone_lr_scale`` (segmentation, the
  official DeepLab recipe) gets the rate as a schedule ('poly': rate x (1 - step /
  total)^poly_power; 'constant'), the backbone's ``backbone_lr_scale`` times the head's,
  and decoupled weight decay under 'adam' (AdamW, as the official code).
  """
  if 'schedule' not in t:
    return _transform(t, t.learning_rate, adam_decay=False)
  if t.schedule == 'poly':
    rate = optax.polynomial_schedule(t.learning_rate, 0.0, power=t.poly_power,
                                     transition_steps=total_steps)
  else:
    rate = optax.constant_schedule(t.learning_rate)

  def make(scale: float) -> optax.GradientTransformation:
    return _transform(t, lambda step: scale * rate(step), adam_decay=True)

  return optax.multi_transform(
      {'backbone': make(t.backbone_lr_scale), 'head': make(1.0)},
      lambda params: {k: 'backbone' if k == 'backbone' else 'head' for k in params})


def schedule(config: ml_collections.ConfigDict, num_train: int) -> tuple[int, int, int]:
  """(total steps, steps between evaluations, steps between checkpoints)."""
  t = config.train
  steps_per_epoch = max(1, num_train // t.batch_size)
  total = t.steps if t.steps > 0 else max(1, math.ceil(t.epochs * num_train / t.batch_size))
  eval_every = t.eval_every or steps_per_epoch
  return total, eval_every, t.checkpoint_every or eval_every


def step_list(steps: Sequence[int]) -> tuple[int, ...]:
  """A step-tuple field (``train.eval_at``, ``train.keep_at``: (100, 300)) as sorted steps."""
  return tuple(sorted({int(v) for v in steps}))


def evaluate(p_eval_step: Callable, state: TrainState, batches: Iterator[dict[str, Any]],
             mesh: jax.sharding.Mesh) -> Any:
  """The sums of `p_eval_step` (any pytree) over every evaluation batch, on the host."""
  return parallel.accumulate(lambda batch: p_eval_step(state, parallel.to_global(mesh, batch)),
                             batches)


@dataclasses.dataclass(frozen=True)
class Setup:
  """What every run of one config shares but its seed: the data, the model, the optimiser
  and the compiled per-device steps (`prepare`)."""
  task: Task
  mesh: jax.sharding.Mesh
  train_src: Any
  test_src: Any
  info: Any
  model: nn.Module
  tx: optax.GradientTransformation
  schedule: loop.Schedule
  init: Callable  # `init_fn`: (seed, weights=None) -> the replicated fresh state.
  train_step: Callable  # Per device: (state, batch) -> (state, metrics); see `parallel`.
  p_train_step: Callable  # jit(shard_map(train_step)), the state donated.
  p_eval_step: Callable  # jit(shard_map(task.eval_step)).


def prepare(config: ml_collections.ConfigDict, task: Task) -> Setup:
  """Checks the batch sizes against the devices, loads the data, builds the model, the
  optimiser, the schedule and the steps of ``config`` (its seed aside): the runs of a
  group (`gpjax.core.multirun`) share them, so they trace and compile once."""
  mesh, t = parallel.make_mesh(), config.train
  for field, size in (('train.batch_size', t.batch_size),
                      ('eval.batch_size', config.eval.batch_size)):
    parallel.check_divisible(f'config.{field}', size, jax.device_count(), 'devices')
  train_src, test_src, info = task.load_data(config)
  total, eval_every, ckpt_every = schedule(config, info.num_train)
  model = task.create_model(config, task.num_classes(config, info))
  tx = create_optimizer(t, total)
  step = functools.partial(task.train_step, model=model, tx=tx, config=config, info=info)
  return Setup(
      task=task, mesh=mesh, train_src=train_src, test_src=test_src, info=info, model=model,
      tx=tx, schedule=loop.Schedule(total, eval_every, ckpt_every, t.log_every,
                                    t.keep_checkpoints, t.batch_size, step_list(t.eval_at),
                                    step_list(t.keep_at)),
      init=init_fn(model, tx, task.input_shape(config, info), mesh),
      train_step=step, p_train_step=parallel.shard_step(step, mesh, outputs=2, donate=True),
      p_eval_step=parallel.shard_step(
          functools.partial(task.eval_step, model=model, config=config, info=info), mesh))


def initial_state(setup: Setup, config: ml_collections.ConfigDict) -> TrainState:
  """The fresh state of the run ``config`` (its ``seed``), replicated over the mesh; the
  task's ``weights``, if any, replace the initialised variables (`replace_variables`)."""
  weights = setup.task.weights
  return setup.init(config.seed, weights(config, setup.model) if weights is not None else None)


def host_batches(setup: Setup, config: ml_collections.ConfigDict
                 ) -> Callable[[int, int], Iterator[batching.Batch]]:
  """(start step, number of steps) -> this process's training batches of run ``config``,
  in order from ``start`` (pure functions of its seed and the step), read ahead."""
  def batches(start: int, num_steps: int) -> Iterator[batching.Batch]:
    return batching.prefetch(
        functools.partial(batching.host_batch, setup.train_src,
                          global_batch_size=config.train.batch_size, seed=config.seed,
                          process_index=jax.process_index(),
                          process_count=jax.process_count()), start, num_steps)
  return batches


def run_eval(setup: Setup, config: ml_collections.ConfigDict, state: TrainState
             ) -> dict[str, Any]:
  """The task's test metrics of ``state`` over the whole evaluation split."""
  totals = evaluate(setup.p_eval_step, state, setup.task.eval_batches(setup.test_src, config),
                    setup.mesh)
  return setup.task.summarize(totals, setup.info)


def finish(setup: Setup, config: ml_collections.ConfigDict, workdir: str,
           out: loop.Outcome) -> dict[str, Any]:
  """The run's ``results.json`` contents from the loop's `Outcome` (written with the task's
  figures on process 0), or ``{'preempted_at_step': s}``."""
  if out.preempted_at_step is not None:
    return {'preempted_at_step': out.preempted_at_step}
  task, info = setup.task, setup.info
  results = {'config': config.to_dict(), 'dataset': info.name,
             'num_classes': task.num_classes(config, info),
             **task.results(config, out.last_eval, out.best, info),
             'curve': out.evals,
             'num_devices': jax.device_count(), 'num_processes': jax.process_count(),
             'device_kind': jax.devices()[0].device_kind, 'jax_version': jax.__version__}
  if jax.process_index() == 0:
    writers.write_json(os.path.join(workdir, 'results.json'), results)
    task.write_figures(config, workdir, out.last_eval)
  return results


def train_run(setup: Setup, config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the run ``config`` (whose config, but for its seed, made ``setup``) in ``workdir``
  (resuming from its newest checkpoint), evaluates it, and returns the contents of
  ``results.json`` (or ``{'preempted_at_step': s}``)."""
  os.makedirs(workdir, exist_ok=True)
  task = setup.task
  # The checkpoint manager keeps the best by ``task.metric``.
  out = loop.run(
      workdir, initial_state(setup, config), schedule=setup.schedule,
      config=config.to_dict(),
      step_fn=lambda state, batch: setup.p_train_step(state,
                                                      parallel.to_global(setup.mesh, batch)),
      batches=host_batches(setup, config), evaluate=lambda state: run_eval(setup, config, state),
      metric=task.metric, desc=task.description(config))
  return finish(setup, config, workdir, out)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, task: Task
                       ) -> dict[str, Any]:
  """`train_run` of ``task`` with a `Setup` of its own. (Several seeds of one config:
  `gpjax.core.multirun`.)"""
  return train_run(prepare(config, task), config, workdir)
