"""Classification on canvases (jobs ``train`` and ``evaluate_torch``): the location task (label = the cell) and the
semantic one (label = the class), with PermuteNet orderings and AugShift's shifted pairs.

What the core (`gpjax.trainer`) runs: the model, the data, the per-device train
and eval steps, the evaluation summary (test loss, accuracy, per-location
accuracy) and the per-location heatmap. `evaluate_torch` scores an official PyTorch
checkpoint (`gpjax.interop.torch_classifier`) on the same test canvases.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax

from gpjax import figures, parallel, trainer, writers
from gpjax.data import batching, examples, input_pipeline
from gpjax.interop import torch_classifier, torch_import
from gpjax.models import Classifier, random_ordering
from gpjax.probes import permutation
from gpjax.validate import ConfigError

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
METRIC = 'test_accuracy'  # The best checkpoint is kept by this evaluation key.


def description(config: ml_collections.ConfigDict) -> str:
  """The progress bar's label."""
  return config.task


def create_model(config: ml_collections.ConfigDict, num_classes: int,
                 axis_name: str | None = parallel.DATA_AXIS) -> Classifier:
  m = config.model
  return Classifier(num_classes=num_classes, backbone=m.backbone, head=m.head, padding=m.padding,
                    width=m.width, stem=m.stem, permute_layer=m.permute_layer,
                    bn_axis_name=axis_name, dtype=jnp.dtype(m.dtype), param_init=m.init)


def num_classes(config: ml_collections.ConfigDict, info: input_pipeline.DatasetInfo) -> int:
  return config.data.grid ** 2 if config.task == 'location' else info.num_classes


def train_step(state: trainer.TrainState, batch: Batch, *, model: Classifier,
               tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
               info: input_pipeline.DatasetInfo) -> tuple[trainer.TrainState, Metrics]:
  """One optimisation step on this device's shard of the global batch."""
  if config.augshift.enabled:  # Two shifted copies per image: a path of its own.
    return augshift_step(state, batch, model=model, tx=tx, config=config, info=info)
  key = jax.random.fold_in(jax.random.key(state.seed), state.step)
  images, labels, _ = examples.make_examples(jax.random.fold_in(key, 0), batch, config, info,
                                             flip=config.data.flip)
  return cross_entropy_step(state, images, labels, _step_ordering(key, model, config),
                            model=model, tx=tx)


def cross_entropy_step(state: trainer.TrainState, images: jax.Array, labels: jax.Array,
                       ordering: jax.Array | None, *, model: Classifier,
                       tx: optax.GradientTransformation) -> tuple[trainer.TrainState, Metrics]:
  """One cross-entropy step on this device's images (B, H, W, C) and labels (B,)."""
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
  return trainer.apply_gradients(state, tx, grads, batch_stats), {'loss': loss,
                                                                  'accuracy': accuracy}


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


def augshift_step(state: trainer.TrainState, batch: Batch, *, model: Classifier,
                  tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
                  info: input_pipeline.DatasetInfo) -> tuple[trainer.TrainState, Metrics]:
  """`train_step` with ``config.augshift.enabled``: both copies go through the
  network as one batch of 2B (BatchNorm statistics over both), `augshift_loss`. With
  ``augshift.copies = 1`` (standard training, AugShift's baseline) only copy 1 does,
  with its cross-entropy alone: the same placements, no second copy, no MSE."""
  key = jax.random.fold_in(jax.random.key(state.seed), state.step)
  images_a, images_b, labels = examples.make_shifted_pairs(
      jax.random.fold_in(key, 0), batch, config, info, flip=config.data.flip)
  ordering = _step_ordering(key, model, config)  # Shared by both copies.
  n = labels.shape[0]
  if config.augshift.copies == 1:
    return cross_entropy_step(state, images_a, labels, ordering, model=model, tx=tx)

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
  return trainer.apply_gradients(state, tx, grads, batch_stats), {
      k: v if k == 'loss' else lax.pmean(v, parallel.DATA_AXIS) for k, v in metrics.items()}


def eval_step(state: trainer.TrainState, batch: Batch, *, model: Classifier,
              config: ml_collections.ConfigDict,
              info: input_pipeline.DatasetInfo) -> dict[str, jax.Array]:
  """Summed loss (R,), correct (R, g*g) and count (g*g,) of one evaluation batch (its test
  canvases: `examples.eval_examples`) under R channel orderings.

  A PermuteNet is tested as it is trained (and as the official code tests it): under
  ``eval.orderings`` random orderings at its ``permute_layer`` (rows 1..R-1 of
  `eval_orderings`), plus the identity (row 0). Other heads: R = 1, no ordering.
  """
  images, labels, cells = examples.eval_examples(batch, config, info)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  num_cells = config.data.grid ** 2
  mask = batch['mask']
  if config.model.head == 'permutenet':
    orderings = eval_orderings(config, model)
    layer = config.model.permute_layer
    sums = permutation.probe_sums(
        model, variables, images, labels, cells, mask, orderings, layer=layer,
        num_cells=num_cells, image_chunk=images.shape[0],
        ordering_chunk=orderings.shape[0] if layer == 5 else config.eval.ordering_chunk)
  else:
    logits, _ = model.apply(variables, images, train=False)
    weight = mask.astype(jnp.float32)
    onehot = jax.nn.one_hot(cells, num_cells) * weight[:, None]
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels) * weight
    sums = {'loss': loss.sum()[None], 'correct': (correct @ onehot)[None],
            'count': onehot.sum(0)}
  return lax.psum(sums, parallel.DATA_AXIS)


def eval_orderings(config: ml_collections.ConfigDict, model: Classifier) -> jax.Array:
  """(1 + eval.orderings, C) int32: the identity, then the orderings a PermuteNet is tested
  with, fixed by ``eval.seed`` (the same at every evaluation; `permutation.ordering_rows`)."""
  return permutation.ordering_rows(config.eval.seed, 1 + config.eval.orderings,
                                   model.ordering_length())


def load_data(config: ml_collections.ConfigDict
              ) -> tuple[input_pipeline.Source, input_pipeline.Source, input_pipeline.DatasetInfo]:
  """(train split, evaluation split, info) of ``config.data``."""
  data_dir = config.data.data_dir or None
  image_size = config.data.image_size or None
  train_src, info = input_pipeline.load_source(config.data.name, 'train', data_dir=data_dir,
                                               image_size=image_size)
  test_src, _ = input_pipeline.load_source(config.data.name, info.eval_split, data_dir=data_dir,
                                           image_size=image_size)
  return train_src, test_src, info


def input_shape(config: ml_collections.ConfigDict,
                info: input_pipeline.DatasetInfo) -> tuple[int, int, int]:
  """The canvas shape (g h, g w, C)."""
  h, w, c = info.image_shape
  return (config.data.grid * h, config.data.grid * w, c)


def eval_batches(source: input_pipeline.Source,
                 config: ml_collections.ConfigDict) -> Iterator[batching.Batch]:
  """This process's share of the whole evaluation split, padded to whole batches."""
  return batching.eval_batches(source, config.eval.batch_size, process_index=jax.process_index(),
                               process_count=jax.process_count())


def summarize(totals: dict[str, np.ndarray], info: input_pipeline.DatasetInfo) -> dict[str, Any]:
  """Test loss, accuracy and per-location accuracy (g*g, row-major) from `eval_step` sums.

  With orderings (a PermuteNet: R > 1 rows) each is the mean over the random orderings
  (rows 1..R-1), as the official test averages over its per-batch orderings;
  ``test_accuracy_identity`` is row 0 and ``test_accuracy_orderings`` the spread
  (num_orderings, mean, std, min, max) over the random ones.
  """
  correct = np.asarray(totals['correct'], np.float64)  # (R, g*g)
  count = np.asarray(totals['count'], np.float64)  # (g*g,)
  loss = np.asarray(totals['loss'], np.float64) / count.sum()  # (R,)
  accuracy = correct.sum(1) / count.sum()
  per_location = correct / np.maximum(count, 1)
  rows = slice(1, None) if len(accuracy) > 1 else slice(None)
  out = {'test_loss': float(loss[rows].mean()), 'test_accuracy': float(accuracy[rows].mean()),
         'per_location_accuracy': per_location[rows].mean(0).tolist()}
  if len(accuracy) > 1:
    others = accuracy[1:]
    out['test_accuracy_identity'] = float(accuracy[0])
    out['test_accuracy_orderings'] = {
        'num_orderings': int(others.size), 'mean': float(others.mean()),
        'std': float(others.std()), 'min': float(others.min()), 'max': float(others.max())}
  return out


def results(config: ml_collections.ConfigDict, final: dict[str, Any], best: dict[str, Any],
            info: input_pipeline.DatasetInfo) -> dict[str, Any]:
  """This task's entries of ``results.json``; a PermuteNet's test accuracy is the mean over
  its test orderings (`summarize`), its best checkpoint chosen by that mean too."""
  out = {'test_accuracy': final['test_accuracy'], 'test_loss': final['test_loss'],
         'per_location_accuracy': final['per_location_accuracy'], 'steps': final['step'],
         'best_test_accuracy': best['test_accuracy'], 'best_step': best['step']}
  for key in ('test_accuracy_identity', 'test_accuracy_orderings'):
    if key in final:
      out[key] = final[key]
  return out


def write_figures(config: ml_collections.ConfigDict, workdir: str, final: dict[str, Any]) -> None:
  """per_location_accuracy.png: the final test accuracy of each cell."""
  m = config.model
  figures.save_location_heatmap(
      os.path.join(workdir, 'per_location_accuracy.png'), final['per_location_accuracy'],
      config.data.grid, f'{config.task}: {m.backbone} {m.head}, padding={m.padding}\n'
      f'test accuracy {100 * final["test_accuracy"]:.1f}%')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The ``train`` job: `trainer.train_and_evaluate` of this task."""
  return trainer.train_and_evaluate(config, workdir, task=sys.modules[__name__])


def evaluate_torch(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The ``evaluate_torch`` job: the official checkpoint ``config.source.torch_checkpoint``
  (trained with ``config.model.padding``) on this config's test canvases; writes
  ``results.json`` (test loss, accuracy, per-location accuracy) and the heatmap."""
  _, test_src, info = load_data(config)
  state_dict = torch_import.load_state_dict(config.source.torch_checkpoint)
  model, variables = torch_classifier.import_classifier(
      state_dict, padding=config.model.padding, head=config.model.head)
  if model.num_classes != num_classes(config, info):
    raise ConfigError(f'config.source.torch_checkpoint={config.source.torch_checkpoint!r} has '
                      f'{model.num_classes} outputs; config.task={config.task!r} on '
                      f'{config.data.name} needs {num_classes(config, info)}.')
  mesh = parallel.make_mesh()
  parallel.check_divisible('config.eval.batch_size', config.eval.batch_size, jax.device_count(),
                           'devices')
  state = trainer.TrainState(step=jnp.zeros((), jnp.int32), seed=jnp.zeros((), jnp.int32),
                             params=variables['params'], batch_stats=variables['batch_stats'],
                             opt_state=None)
  state = jax.device_put(state, parallel.replicated(mesh))
  p_eval_step = parallel.shard_step(functools.partial(eval_step, model=model, config=config,
                                                      info=info), mesh)
  final = summarize(trainer.evaluate(p_eval_step, state, eval_batches(test_src, config), mesh),
                    info)
  results = {'config': config.to_dict(), 'dataset': info.name, 'num_classes': model.num_classes,
             'source_checkpoint': config.source.torch_checkpoint, 'backbone': model.backbone,
             'head': model.head, 'width': model.width, **final,
             'num_devices': jax.device_count(), 'device_kind': jax.devices()[0].device_kind,
             'jax_version': jax.__version__}
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    writers.write_json(os.path.join(workdir, 'results.json'), results)
    write_figures(config, workdir, final)
  print(f'{config.source.torch_checkpoint}: test accuracy {final["test_accuracy"]:.4f}',
        flush=True)
  return results
