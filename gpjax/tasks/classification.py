"""Classification on canvases (job ``train``): the location task (label = the cell) and the
semantic one (label = the class), with PermuteNet orderings and AugShift's shifted pairs.

`TASK` is what the core (`gpjax.core.trainer`) runs: the model, the data, the
per-device train and eval steps (objectives in `gpjax.tasks.objectives`), the
evaluation summary (test loss, accuracy, per-location accuracy), the per-location
heatmap, and `check`, the config's validation.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax

from gpjax.checks import (DTYPES, at_least, below_one, one_of, positive, step_list,
                          steps_or_epochs)
from gpjax.core import figures, parallel, trainer
from gpjax.core.task import Task
from gpjax.data import batching, examples, input_pipeline
from gpjax.data.canvas import BACKGROUNDS, PLACEMENTS
from gpjax.errors import ConfigError
from gpjax.models import Classifier, orderings
from gpjax.models.classifier import BACKBONES, HEADS, PERMUTE_LAYERS
from gpjax.models.init import INITS
from gpjax.models.padding import PADDINGS
from gpjax.models.resnet import STEMS
from gpjax.tasks import objectives

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
TASKS = ('location', 'semantic')
OPTIMIZERS = ('adam', 'adamw', 'sgd')


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
    return objectives.augshift_step(state, batch, model=model, tx=tx, config=config, info=info)
  key = jax.random.fold_in(jax.random.key(state.seed), state.step)
  images, labels, _ = examples.make_examples(jax.random.fold_in(key, 0), batch, config, info,
                                             flip=config.data.flip)
  return objectives.cross_entropy_step(state, images, labels,
                                      objectives.step_ordering(key, model, config),
                                      model=model, tx=tx)


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
    rows = eval_orderings(config, model)
    layer = config.model.permute_layer
    sums = orderings.probe_sums(
        model, variables, images, labels, cells, mask, rows, layer=layer,
        num_cells=num_cells, image_chunk=images.shape[0],
        ordering_chunk=rows.shape[0] if layer == 5 else config.eval.ordering_chunk)
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
  with, fixed by ``eval.seed`` (the same at every evaluation; `orderings.ordering_rows`)."""
  return orderings.ordering_rows(config.eval.seed, 1 + config.eval.orderings,
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


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field, its value and what is allowed."""
  one_of('task', config.task, TASKS)
  at_least('seed', config.seed, 0)
  d, m, t = config.data, config.model, config.train
  at_least('data.grid', d.grid, 1)
  one_of('data.background', d.background, BACKGROUNDS)
  at_least('data.image_size', d.image_size, 0)
  one_of('model.backbone', m.backbone, BACKBONES)
  one_of('model.padding', m.padding, PADDINGS)
  one_of('model.head', m.head, HEADS)
  one_of('model.permute_layer', m.permute_layer, PERMUTE_LAYERS)
  at_least('model.width', m.width, 1)
  one_of('model.stem', m.stem, STEMS)
  one_of('model.init', m.init, INITS)
  one_of('model.dtype', m.dtype, DTYPES)
  steps_or_epochs(t)
  at_least('train.batch_size', t.batch_size, 1)
  one_of('train.optimizer', t.optimizer, OPTIMIZERS)
  positive('train.learning_rate', t.learning_rate)
  for name in ('b1', 'b2'):
    below_one(f'train.{name}', t[name])
  at_least('train.weight_decay', t.weight_decay, 0.0, float)
  at_least('train.log_every', t.log_every, 1)
  at_least('train.eval_every', t.eval_every, 0)
  step_list('train.eval_at', t.eval_at)
  step_list('train.keep_at', t.keep_at)
  at_least('train.checkpoint_every', t.checkpoint_every, 0)
  at_least('train.keep_checkpoints', t.keep_checkpoints, 1)
  at_least('eval.batch_size', config.eval.batch_size, 1)
  at_least('eval.seed', config.eval.seed, 0)
  at_least('eval.orderings', config.eval.orderings, 1)
  at_least('eval.ordering_chunk', config.eval.ordering_chunk, 1)
  check_augshift(config)
  check_sizes(config)


def check_augshift(config: ml_collections.ConfigDict) -> None:
  """The ``augshift`` section: AugShift needs a label that does not move with the image."""
  a = config.augshift
  if not isinstance(a.enabled, bool):
    raise ConfigError(f'config.augshift.enabled={a.enabled!r} is not allowed; it must be a bool.')
  at_least('augshift.weight', a.weight, 0.0, float)
  if not math.isfinite(a.weight):
    raise ConfigError(f'config.augshift.weight={a.weight!r} is not allowed; it must be finite.')
  one_of('augshift.placement', a.placement, PLACEMENTS)
  at_least('augshift.max_shift', a.max_shift, 0)
  one_of('augshift.copies', a.copies, (1, 2))
  if a.copies == 1 and a.weight:
    raise ConfigError(f'config.augshift.weight={a.weight!r} needs config.augshift.copies=2: '
                      'with one copy per image there is no second latent to match.')
  if a.placement == 'cell' and a.max_shift:
    raise ConfigError(f'config.augshift.max_shift={a.max_shift!r} needs '
                      "config.augshift.placement='pixel': cell placements are whole cells apart.")
  if a.enabled and config.task == 'location':
    raise ConfigError("config.augshift.enabled=True with config.task='location': AugShift "
                      'trains the two shifted copies of an image to give the same output, but '
                      "a location label changes with the shift. Use config.task='semantic'.")


TASK = Task(job='train', metric='test_accuracy', check=check, description=description,
            load_data=load_data, num_classes=num_classes, create_model=create_model,
            input_shape=input_shape, train_step=train_step, eval_step=eval_step,
            eval_batches=eval_batches, summarize=summarize, results=results,
            write_figures=write_figures)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The ``train`` job: `trainer.train_and_evaluate` of this task."""
  return trainer.train_and_evaluate(config, workdir, TASK)


def min_canvas(model: ml_collections.ConfigDict) -> int:
  """The smallest canvas side whose maps stay wider than 1x1 until the last stage: a ResNet
  halves the canvas 4 times (5 with the ImageNet stem's max-pool), so its last stage starts
  at 1x1 from 8 (16) pixels; a VGG's five max-pools need 32 (its own check)."""
  return 32 if model.backbone.startswith('vgg') else 16 if model.stem == 'imagenet' else 8


def check_sizes(config: ml_collections.ConfigDict) -> None:
  """What the task, canvas and PermuteNet need of each other: 2+ cells to locate, a canvas
  the backbone can downsample, no more test orderings than the channels have."""
  d, m = config.data, config.model
  if config.task == 'location' and d.grid < 2:
    raise ConfigError(f"config.data.grid={d.grid!r} with config.task='location': one cell is "
                      'one class; give a grid >= 2.')
  side, need = d.grid * d.image_size, min_canvas(m)
  if d.image_size and side < need:
    raise ConfigError(f'config.data.image_size={d.image_size!r}: a {side}x{side} canvas (grid '
                      f'{d.grid}) is smaller than the {need}x{need} that {m.backbone} '
                      f'needs to reach its last stage wider than 1x1; give image_size >= '
                      f'{-(-need // d.grid)}.')
  check_memory(config)
  if m.head == 'permutenet':
    model = Classifier(num_classes=2, backbone=m.backbone, head=m.head, width=m.width,
                       stem=m.stem, permute_layer=m.permute_layer)
    channels = model.ordering_length()
    if channels < 19 and config.eval.orderings > math.factorial(channels) - 1:
      raise ConfigError(f'config.eval.orderings={config.eval.orderings!r}: {channels} channels '
                        f'at layer {m.permute_layer} have only {math.factorial(channels) - 1} '
                        'orderings besides the identity; give at most that many.')


def check_memory(config: ml_collections.ConfigDict) -> None:
  """Refuses a batch or canvas whose activations cannot fit in this host's memory, from the
  shapes alone: a lower bound, the canvases and the first stage's maps (half the canvas side,
  ``model.width`` channels, about ten of them kept for the backward pass) in float32."""
  d, m = config.data, config.model
  side = d.grid * (d.image_size or 32)  # The built-in sets' sources are 32x32.
  per_image = 4 * side * side * (3 + 10 * m.width / 4)
  copies = 2 if config.augshift.enabled and config.augshift.copies == 2 else 1
  need = per_image * max(config.train.batch_size * copies, config.eval.batch_size)
  have = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  if need > have:
    raise ConfigError(f'config.train.batch_size={config.train.batch_size!r} on {side}x{side} '
                      f'canvases (config.data.grid={d.grid}) needs at least '
                      f'{need / 2**30:,.0f} GiB of activations; this host has '
                      f'{have / 2**30:,.0f} GiB. Give a smaller batch or canvas.')

