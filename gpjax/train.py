"""Training and evaluation: one per-device step mapped over the ``data`` mesh axis.

Every random choice of an example (its cell, flip and noise background) is
drawn from a key folded with the example's global index, and BatchNorm
statistics and gradients are averaged over the axis, so a run computes the
same numbers on 1 or N devices and hosts (up to float rounding).
"""

from __future__ import annotations

import functools
import math
import os
from typing import TYPE_CHECKING, Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from gpjax import figures, loop, parallel, writers
from gpjax.data import canvas, input_pipeline
from gpjax.models import Classifier, random_ordering
from gpjax.validate import validate

if TYPE_CHECKING:  # Annotations only: the step (and gpjax.bench) runs without ml_collections.
  import ml_collections

Batch = dict[str, jax.Array]


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  seed: jax.Array  # config.seed as data: one compiled step serves every seed.
  params: Any
  batch_stats: Any
  opt_state: Any


def create_model(config: ml_collections.ConfigDict, num_classes: int,
                 axis_name: str | None = parallel.DATA_AXIS) -> Classifier:
  m = config.model
  return Classifier(num_classes=num_classes, backbone=m.backbone, head=m.head, padding=m.padding,
                    width=m.width, stem=m.stem, permute_layer=m.permute_layer,
                    bn_axis_name=axis_name, dtype=jnp.dtype(m.dtype))


def create_optimizer(t: ml_collections.ConfigDict) -> optax.GradientTransformation:
  if t.optimizer == 'adam':
    return optax.adam(t.learning_rate, b1=t.b1, b2=t.b2)
  if t.optimizer == 'adamw':
    return optax.adamw(t.learning_rate, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay)
  return optax.chain(optax.add_decayed_weights(t.weight_decay),
                     optax.sgd(t.learning_rate, momentum=0.9))


def num_classes(config: ml_collections.ConfigDict, info: input_pipeline.DatasetInfo) -> int:
  return config.data.grid ** 2 if config.task == 'location' else info.num_classes


def create_train_state(seed: int | jax.Array, model: Classifier, tx: optax.GradientTransformation,
                       canvas_shape: tuple[int, ...]) -> TrainState:
  """Initialises parameters (float32, from ``key(seed)``) for canvases of shape (H, W, C)."""
  seed = jnp.asarray(seed, jnp.int32)
  variables = model.init(jax.random.key(seed), jnp.zeros((1, *canvas_shape), jnp.float32),
                         train=False)
  return TrainState(step=jnp.zeros((), jnp.int32), seed=seed, params=variables['params'],
                    batch_stats=variables['batch_stats'], opt_state=tx.init(variables['params']))


def init_state(seed: int, model: Classifier, tx: optax.GradientTransformation,
               canvas_shape: tuple[int, ...], mesh: jax.sharding.Mesh) -> TrainState:
  """`create_train_state` in one jitted call, replicated over ``mesh``. On CPU the init
  program is compiled without backend optimisation: it runs once, and XLA:CPU otherwise
  spends seconds optimising the random initialisers (7.9 s vs 1.4 s for a ResNet-18)."""
  options = {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else None
  init = jax.jit(functools.partial(create_train_state, model=model.clone(bn_axis_name=None),
                                   tx=tx, canvas_shape=canvas_shape),
                 out_shardings=parallel.replicated(mesh), compiler_options=options)
  return init(jnp.asarray(seed, jnp.int32))


def make_examples(key: jax.Array, batch: Batch, config: ml_collections.ConfigDict,
                  info: input_pipeline.DatasetInfo, *, flip: bool) -> tuple[jax.Array, ...]:
  """Canvases (B, gh, gw, C), labels (B,) and cells (B,) of this device's shard.

  The keys are folded with the examples' global indices (``batch['index']``),
  so no example's canvas depends on how the batch is split over devices.
  """
  keys = jax.vmap(functools.partial(jax.random.fold_in, key))(batch['index'])
  d = config.data
  images, cells = canvas.canvas_batch(keys, batch['image'], grid=d.grid, mean=info.mean,
                                      std=info.std, background=d.background, flip=flip)
  labels = cells if config.task == 'location' else batch['label']
  return images, labels, cells


def train_step(state: TrainState, batch: Batch, *, model: Classifier,
               tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
               info: input_pipeline.DatasetInfo) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step on this device's shard of the global batch."""
  if config.augshift.enabled:  # Two shifted copies per image: a path of its own.
    return augshift_step(state, batch, model=model, tx=tx, config=config, info=info)
  key = jax.random.fold_in(jax.random.key(state.seed), state.step)
  images, labels, _ = make_examples(jax.random.fold_in(key, 0), batch, config, info,
                                    flip=config.data.flip)
  ordering = _step_ordering(key, model, config)

  def loss_fn(params):
    (logits, _), updates = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
        ordering=ordering, mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    # With check_vma the gradient of replicated params is summed over the axis;
    # averaging the loss (not the gradients) gives the global-batch gradient.
    return lax.pmean(loss, parallel.DATA_AXIS), (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  accuracy = lax.pmean(jnp.mean(jnp.argmax(logits, -1) == labels), parallel.DATA_AXIS)
  return apply_gradients(state, tx, grads, batch_stats), {'loss': loss, 'accuracy': accuracy}


def apply_gradients(state: TrainState, tx: optax.GradientTransformation, grads: Any,
           batch_stats: Any) -> TrainState:
  """The optimiser update and the new BatchNorm statistics: the next state."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=batch_stats, opt_state=opt_state)


def _step_ordering(key: jax.Array, model: Classifier,
                   config: ml_collections.ConfigDict) -> jax.Array | None:
  """PermuteNet: one fresh ordering per step, shared by the whole batch."""
  if config.model.head != 'permutenet':
    return None
  return random_ordering(jax.random.fold_in(key, 1), model.ordering_length())


def augshift_loss(logits_a: jax.Array, logits_b: jax.Array, latent_a: jax.Array,
                  latent_b: jax.Array, labels: jax.Array,
                  weight: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """AugShift: CE(y1) + CE(y2) + weight * MSE(z1, z2) of one device's pairs.

  Args:
    logits_a, logits_b: (B, k) logits of the two shifted copies.
    latent_a, latent_b: (B, C) their GAP latents (``features['pooled']``).
    labels: (B,) int classes.
    weight: lambda.

  Returns:
    The loss and its parts: ``ce`` = CE(y1) + CE(y2), each a batch mean, and
    ``latent_mse`` = mean over batch and channels of (z1 - z2)^2 (PyTorch's
    ``MSELoss``). The MSE pulls both latents (no stop-gradient); the CE
    terms keep them from collapsing.
  """
  def ce(logits):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  ce_sum = ce(logits_a) + ce(logits_b)
  mse = jnp.mean(jnp.square(latent_a - latent_b))
  return ce_sum + weight * mse, {'ce': ce_sum, 'latent_mse': mse}


def make_shifted_pairs(key: jax.Array, batch: Batch, config: ml_collections.ConfigDict,
                       info: input_pipeline.DatasetInfo, *,
                       flip: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
  """AugShift's two canvases of each example, (B, gh, gw, C) each, and the labels (B,):
  keyed by the global index as in `make_examples`; only the source's position differs."""
  keys = jax.vmap(functools.partial(jax.random.fold_in, key))(batch['index'])
  d, a = config.data, config.augshift
  images_a, images_b, _, _ = canvas.shifted_pair_batch(
      keys, batch['image'], grid=d.grid, mean=info.mean, std=info.std, background=d.background,
      flip=flip, placement=a.placement, max_shift=a.max_shift)
  return images_a, images_b, batch['label']


def augshift_step(state: TrainState, batch: Batch, *, model: Classifier,
                  tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
                  info: input_pipeline.DatasetInfo) -> tuple[TrainState, dict[str, jax.Array]]:
  """`train_step` with ``config.augshift.enabled``: both copies go through the
  network as one batch of 2B (BatchNorm statistics over both), `augshift_loss`."""
  key = jax.random.fold_in(jax.random.key(state.seed), state.step)
  images_a, images_b, labels = make_shifted_pairs(jax.random.fold_in(key, 0), batch, config,
                                                  info, flip=config.data.flip)
  ordering = _step_ordering(key, model, config)  # Shared by both copies.
  n = labels.shape[0]

  def loss_fn(params):
    (logits, feats), updates = model.apply(
        {'params': params, 'batch_stats': state.batch_stats},
        jnp.concatenate([images_a, images_b]), train=True, ordering=ordering,
        mutable=['batch_stats'])
    z = feats['pooled']
    loss, parts = augshift_loss(logits[:n], logits[n:], z[:n], z[n:], labels,
                                config.augshift.weight)
    return lax.pmean(loss, parallel.DATA_AXIS), (logits, parts, updates['batch_stats'])

  (loss, (logits, parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  correct = jnp.argmax(logits, -1) == jnp.concatenate([labels, labels])
  metrics = {'loss': loss, 'accuracy': jnp.mean(correct), **parts}
  return apply_gradients(state, tx, grads, batch_stats), {
      k: v if k == 'loss' else lax.pmean(v, parallel.DATA_AXIS) for k, v in metrics.items()}


def eval_step(state: TrainState, batch: Batch, *, model: Classifier,
              config: ml_collections.ConfigDict,
              info: input_pipeline.DatasetInfo) -> dict[str, jax.Array]:
  """Summed loss/correct/count, overall and per cell, of one evaluation batch.

  Test canvases are fixed by ``config.eval.seed`` and the example index, so
  every evaluation sees the same canvases.
  """
  images, labels, cells = make_examples(jax.random.key(config.eval.seed), batch, config, info,
                                        flip=False)
  logits, _ = model.apply({'params': state.params, 'batch_stats': state.batch_stats}, images,
                          train=False)
  mask = batch['mask'].astype(jnp.float32)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32) * mask
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels) * mask
  cell_onehot = jax.nn.one_hot(cells, config.data.grid ** 2) * mask[:, None]
  sums = {'loss': loss.sum(), 'correct': correct.sum(), 'count': mask.sum(),
          'cell_correct': correct @ cell_onehot, 'cell_count': cell_onehot.sum(0)}
  return lax.psum(sums, parallel.DATA_AXIS)


def evaluate(p_eval_step, state: TrainState, source, config: ml_collections.ConfigDict,
             mesh) -> dict[str, Any]:
  """Test loss, accuracy and per-location accuracy (g*g, row-major) over the split."""
  totals = None
  for batch in input_pipeline.eval_batches(source, config.eval.batch_size,
                                           process_index=jax.process_index(),
                                           process_count=jax.process_count()):
    sums = p_eval_step(state, parallel.to_global(mesh, batch))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  return {'test_loss': float(totals['loss'] / totals['count']),
          'test_accuracy': float(totals['correct'] / totals['count']),
          'per_location_accuracy': (totals['cell_correct'] /
                                    np.maximum(totals['cell_count'], 1)).tolist()}


def schedule(config: ml_collections.ConfigDict, num_train: int) -> tuple[int, int, int]:
  """(total steps, steps between evaluations, steps between checkpoints)."""
  t = config.train
  steps_per_epoch = max(1, num_train // t.batch_size)
  total = t.steps if t.steps > 0 else max(1, math.ceil(t.epochs * num_train / t.batch_size))
  eval_every = t.eval_every or steps_per_epoch
  return total, eval_every, t.checkpoint_every or eval_every


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, evaluates and checkpoints in ``workdir``; resumes from its newest
  checkpoint. Returns the contents of ``results.json``."""
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  lead = jax.process_index() == 0
  mesh = parallel.make_mesh()
  t = config.train
  parallel.check_divisible('config.train.batch_size', t.batch_size, jax.device_count(), 'devices')
  parallel.check_divisible('config.eval.batch_size', config.eval.batch_size, jax.device_count(),
                           'devices')
  data_dir = config.data.data_dir or None
  image_size = config.data.image_size or None
  train_src, info = input_pipeline.load_source(config.data.name, 'train', data_dir=data_dir,
                                               image_size=image_size)
  test_src, _ = input_pipeline.load_source(config.data.name, info.eval_split, data_dir=data_dir,
                                           image_size=image_size)
  h, w, c = info.image_shape
  canvas_shape = (config.data.grid * h, config.data.grid * w, c)
  model, tx = create_model(config, num_classes(config, info)), create_optimizer(t)
  total, eval_every, ckpt_every = schedule(config, info.num_train)

  state = init_state(config.seed, model, tx, canvas_shape, mesh)
  p_train_step = parallel.shard_step(
      functools.partial(train_step, model=model, tx=tx, config=config, info=info), mesh,
      outputs=2, donate=True)
  p_eval_step = parallel.shard_step(
      functools.partial(eval_step, model=model, config=config, info=info), mesh)

  def batches(start: int, num_steps: int):
    return input_pipeline.prefetch(
        functools.partial(input_pipeline.host_batch, train_src, global_batch_size=t.batch_size,
                          seed=config.seed, process_index=jax.process_index(),
                          process_count=jax.process_count()), start, num_steps)

  out = loop.run(
      workdir, state,
      schedule=loop.Schedule(total, eval_every, ckpt_every, t.log_every, t.keep_checkpoints,
                             t.batch_size),
      config=config.to_dict(),
      step_fn=lambda state, batch: p_train_step(state, parallel.to_global(mesh, batch)),
      batches=batches, evaluate=lambda state: evaluate(p_eval_step, state, test_src, config, mesh),
      metric='test_accuracy', desc=config.task)
  if out.preempted_at_step is not None:
    return {'preempted_at_step': out.preempted_at_step}
  return _write_results(config, workdir, out.last_eval, out.best, info, lead)


def _write_results(config, workdir, final, best, info, lead) -> dict[str, Any]:
  results = {
      'config': config.to_dict(),
      'dataset': info.name,
      'num_classes': num_classes(config, info),
      'test_accuracy': final['test_accuracy'],
      'test_loss': final['test_loss'],
      'per_location_accuracy': final['per_location_accuracy'],
      'steps': final['step'],
      'best_test_accuracy': best['test_accuracy'],
      'best_step': best['step'],
      'num_devices': jax.device_count(),
      'num_processes': jax.process_count(),
      'device_kind': jax.devices()[0].device_kind,
      'jax_version': jax.__version__,
  }
  if lead:
    writers.write_json(os.path.join(workdir, 'results.json'), results)
    m = config.model
    figures.save_location_heatmap(
        os.path.join(workdir, 'per_location_accuracy.png'), final['per_location_accuracy'],
        config.data.grid, f'{config.task}: {m.backbone} {m.head}, padding={m.padding}\n'
        f'test accuracy {100 * final["test_accuracy"]:.1f}%')
  return results
