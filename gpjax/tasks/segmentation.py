"""Semantic segmentation with DeepLabv3 (job ``segment``).

What the core (`gpjax.core.trainer`) runs: the model, its starting backbone (random,
or torchvision ResNet weights from ``model.pretrained_backbone``), the data
(crops, colour jitter and flips: `gpjax.data.examples`), the per-device train
step (loss = mean over all valid pixels of all devices) and eval step (confusion
matrices summed over the split, mIoU as the official code's, `gpjax.core.metrics`).
"""

import os
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax

from gpjax.core import metrics
from gpjax.core import parallel
from gpjax.core import trainer
from gpjax.core.task import Task
from gpjax.data import batching, canvas, examples, segmentation
from gpjax.interop import torch_import  # torch itself is imported only to read a file.
from gpjax.models.deeplab import BACKBONES, DeepLabV3
from gpjax.models.padding import PADDINGS
from gpjax.checks import (DTYPES, at_least, below_one, one_of, positive, step_list,
                          steps_or_epochs)
from gpjax.errors import ConfigError

Batch = dict[str, jax.Array]
TORCHVISION_WIDTH = 64  # Stem channels of every torchvision ResNet.


def description(config: ml_collections.ConfigDict) -> str:
  """The progress bar's label."""
  return 'segment'


def create_model(config: ml_collections.ConfigDict, num_classes: int,
                 axis_name: str | None = parallel.DATA_AXIS) -> DeepLabV3:
  m = config.model
  return DeepLabV3(num_classes=num_classes, backbone=m.backbone, width=m.width,
                   aspp_features=m.aspp_features, padding=m.padding, head_padding=m.head_padding,
                   dropout=m.dropout, backbone_bn_momentum=m.backbone_bn_momentum,
                   bn_axis_name=axis_name, dtype=jnp.dtype(m.dtype))


def pretrained_weights(config: ml_collections.ConfigDict,
                       model: DeepLabV3) -> dict[str, Any] | None:
  """The backbone's ``{'params', 'batch_stats'}`` converted from the torchvision ResNet state
  dict ``model.pretrained_backbone`` (read weights-only), or None to start from scratch."""
  path = config.model.pretrained_backbone
  if not path:
    return None
  state = torch_import.load_state_dict(path, field='model.pretrained_backbone')
  return torch_import.convert_backbone(state, model)


def backbone_init(config: ml_collections.ConfigDict) -> str:
  """How the backbone started: 'scratch' or 'pretrained: <file>'."""
  path = config.model.pretrained_backbone
  return f'pretrained: {path}' if path else 'scratch'


def train_step(state: trainer.TrainState, batch: Batch, *, model: DeepLabV3,
               tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
               info: segmentation.SegInfo) -> tuple[trainer.TrainState, dict[str, jax.Array]]:
  """One step on this device's shard; the loss is the mean over all valid pixels of all
  devices (official: CrossEntropyLoss(ignore_index=255), mean)."""
  key = jax.random.fold_in(jax.random.key(state.seed), state.step)
  images, labels = examples.make_segmentation_examples(jax.random.fold_in(key, 0), batch,
                                                       config, info)
  valid = labels < info.num_classes  # 255 and any stray value are ignored.
  count = lax.psum(valid.sum(), parallel.DATA_AXIS)
  dropout_key = jax.random.fold_in(jax.random.fold_in(key, 1), lax.axis_index(parallel.DATA_AXIS))

  def loss_fn(params):
    (logits, _), updates = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
        mutable=['batch_stats'], rngs={'dropout': dropout_key})
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
    # A psum'd loss: with check_vma the gradient is then the global-batch one.
    loss = lax.psum(jnp.sum(ce * valid), parallel.DATA_AXIS) / jnp.maximum(count, 1)
    return loss, (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  correct = lax.psum(jnp.sum((jnp.argmax(logits, -1) == labels) & valid), parallel.DATA_AXIS)
  metrics = {'loss': loss, 'accuracy': correct / jnp.maximum(count, 1)}
  return trainer.apply_gradients(state, tx, grads, batch_stats), metrics


def eval_step(state: trainer.TrainState, batch: Batch, *, model: DeepLabV3,
              config: ml_collections.ConfigDict, info: segmentation.SegInfo) -> jax.Array:
  """Confusion matrix (K, K) of one evaluation batch, summed over devices."""
  logits, _ = model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                          canvas.normalize(batch['image'], info.mean, info.std),
                          train=False)
  conf = metrics.confusion_matrix(batch['label'], jnp.argmax(logits, -1), info.num_classes,
                                  weights=batch['mask'][:, None, None])
  return lax.psum(conf, parallel.DATA_AXIS)


def _image_size(d: ml_collections.ConfigDict) -> tuple[int, int] | None:
  return (d.image_height, d.image_width) if d.image_height and d.image_width else None


def load_split(d: ml_collections.ConfigDict, split: str
               ) -> tuple[segmentation.SegSource, segmentation.SegInfo]:
  """`segmentation.load_segmentation` with a config's ``data`` fields."""
  return segmentation.load_segmentation(d.name, split, data_dir=d.data_dir or None,
                                        image_size=_image_size(d))


def load_data(config: ml_collections.ConfigDict
              ) -> tuple[segmentation.SegSource, segmentation.SegSource, segmentation.SegInfo]:
  """(train split, evaluation split, info) of ``config.data``."""
  train_src, info = load_split(config.data, 'train')
  test_src, _ = load_split(config.data, 'eval')
  return train_src, test_src, info


def num_classes(config: ml_collections.ConfigDict, info: segmentation.SegInfo) -> int:
  return info.num_classes


def input_shape(config: ml_collections.ConfigDict,
                info: segmentation.SegInfo) -> tuple[int, int, int]:
  """The training crop (h, w, 3), or the examples' shape without a crop."""
  return (*(examples.crop_size(config) or info.image_shape[:2]), 3)


def eval_batches(source: segmentation.SegSource,
                 config: ml_collections.ConfigDict) -> Iterator[batching.Batch]:
  """This process's share of the first ``eval.num_examples`` evaluation examples."""
  return batching.eval_batches(source, config.eval.batch_size,
                               num_examples=config.eval.num_examples,
                               pad_label=segmentation.IGNORE_LABEL,
                               process_index=jax.process_index(),
                               process_count=jax.process_count())


def summarize(conf: np.ndarray, info: segmentation.SegInfo) -> dict[str, Any]:
  """mIoU, pixel accuracy and per-class IoU from the summed confusion matrix (K, K)."""
  conf = np.asarray(conf)
  out = metrics.summarize(conf, info.class_names)
  return {'test_miou': out['miou'], 'test_pixel_accuracy': out['pixel_accuracy'],
          'iou_per_class': out['iou_per_class'], 'confusion': conf.tolist()}


def results(config: ml_collections.ConfigDict, final: dict[str, Any], best: dict[str, Any],
            info: segmentation.SegInfo) -> dict[str, Any]:
  """This task's entries of ``results.json``."""
  return {'class_names': list(info.class_names), 'backbone_init': backbone_init(config),
          'steps': final['step'],
          **{k: final[k] for k in ('test_miou', 'test_pixel_accuracy', 'iou_per_class')},
          'best_test_miou': best['test_miou'], 'best_step': best['step']}


def write_figures(config: ml_collections.ConfigDict, workdir: str, final: dict[str, Any]) -> None:
  """None here: the position probes (`gpjax.probes`) plot a trained model."""


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad field of a ``segment`` config."""
  at_least('seed', config.seed, 0)
  d, m, t = config.data, config.model, config.train
  for field in ('image_height', 'image_width', 'crop_height', 'crop_width'):
    at_least(f'data.{field}', d[field], 0)
  if bool(d.crop_height) != bool(d.crop_width):
    raise ConfigError('config.data.crop_height and crop_width must both be 0 or both > 0.')
  at_least('data.color_jitter', d.color_jitter, 0.0, float)
  one_of('model.backbone', m.backbone, BACKBONES)
  one_of('model.padding', m.padding, PADDINGS)
  one_of('model.head_padding', m.head_padding, PADDINGS)
  one_of('model.dtype', m.dtype, DTYPES)
  for field in ('width', 'aspp_features'):
    at_least(f'model.{field}', m[field], 1)
  below_one('model.dropout', m.dropout)
  below_one('model.backbone_bn_momentum', m.backbone_bn_momentum)
  if m.pretrained_backbone:
    if m.width != TORCHVISION_WIDTH:
      raise ConfigError(f'config.model.width={m.width!r} is not allowed with '
                        'config.model.pretrained_backbone: a torchvision ResNet has width '
                        f'{TORCHVISION_WIDTH}.')
    if not os.path.isfile(m.pretrained_backbone):
      raise ConfigError(f'config.model.pretrained_backbone={m.pretrained_backbone!r} is not a '
                        "file: give a torchvision ResNet state dict (.pth), or '' to train "
                        'from scratch.')
    # Read (weights only) and fitted now: an unsafe or mismatched file is refused before any work.
    pretrained_weights(config, create_model(config, num_classes=1, axis_name=None))
  one_of('train.optimizer', t.optimizer, ('sgd', 'adam'))
  one_of('train.schedule', t.schedule, ('poly', 'constant'))
  steps_or_epochs(t)
  below_one('train.momentum', t.momentum)
  at_least('train.poly_power', t.poly_power, 0.0, float)
  positive('train.learning_rate', t.learning_rate)
  for field in ('backbone_lr_scale', 'weight_decay'):
    at_least(f'train.{field}', t[field], 0.0, float)
  for field in ('batch_size', 'log_every', 'keep_checkpoints'):
    at_least(f'train.{field}', t[field], 1)
  for field in ('eval_every', 'checkpoint_every'):
    at_least(f'train.{field}', t[field], 0)
  step_list('train.eval_at', t.eval_at)
  step_list('train.keep_at', t.keep_at)
  at_least('eval.batch_size', config.eval.batch_size, 1)
  at_least('eval.num_examples', config.eval.num_examples, 0)


TASK = Task(job='segment', metric='test_miou', check=check, description=description,
            load_data=load_data, num_classes=num_classes, create_model=create_model,
            input_shape=input_shape, train_step=train_step, eval_step=eval_step,
            eval_batches=eval_batches, summarize=summarize, results=results,
            write_figures=write_figures, weights=pretrained_weights)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The ``segment`` job: `trainer.train_and_evaluate` of this task, its backbone started
  from ``model.pretrained_backbone`` when set."""
  return trainer.train_and_evaluate(config, workdir, TASK)
