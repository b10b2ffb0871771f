"""Semantic segmentation with DeepLabv3: training and evaluation (job ``segment``), and
loading a trained or imported model for the position probes (`load_model`).

The structure follows `gpjax.train`: one per-device step under ``shard_map``
over the ``data`` axis, losses averaged globally (pixel-weighted), BatchNorm
statistics synced, batches a pure function of (seed, step), automatic resume,
``metrics.jsonl`` + TensorBoard, ``results.json``. Evaluation sums confusion
matrices over the split (`gpjax.metrics`): mIoU as the official code's.
"""

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax

from gpjax import checkpoint, loop, metrics, parallel, train, writers
from gpjax.data import input_pipeline, segmentation
from gpjax.models.deeplab import DeepLabV3

Batch = dict[str, jax.Array]


def create_model(config: ml_collections.ConfigDict, num_classes: int,
                 axis_name: str | None = parallel.DATA_AXIS) -> DeepLabV3:
  m = config.model
  return DeepLabV3(num_classes=num_classes, backbone=m.backbone, width=m.width,
                   aspp_features=m.aspp_features, padding=m.padding, head_padding=m.head_padding,
                   dropout=m.dropout, bn_axis_name=axis_name, dtype=jnp.dtype(m.dtype))


def create_optimizer(t: ml_collections.ConfigDict,
                     total_steps: int) -> optax.GradientTransformation:
  """SGD (momentum 0.9, weight decay) or Adam; 'poly' decays the rate as (1 - step / total)^0.9
  (official); the backbone's rate is ``backbone_lr_scale`` times the head's (official: 0.1)."""
  if t.schedule == 'poly':
    rate = optax.polynomial_schedule(t.learning_rate, 0.0, power=0.9, transition_steps=total_steps)
  else:
    rate = optax.constant_schedule(t.learning_rate)

  def make(scale: float) -> optax.GradientTransformation:
    lr = lambda step: scale * rate(step)
    if t.optimizer == 'adam':
      return optax.adamw(lr, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay)
    return optax.chain(optax.add_decayed_weights(t.weight_decay), optax.sgd(lr, momentum=0.9))

  return optax.multi_transform(
      {'backbone': make(t.backbone_lr_scale), 'head': make(1.0)},
      lambda params: {k: 'backbone' if k == 'backbone' else 'head' for k in params})


def normalize(images: jax.Array, info: segmentation.SegInfo) -> jax.Array:
  """uint8 (..., 3) -> float32 normalised with the set's mean and std."""
  mean, std = jnp.asarray(info.mean, jnp.float32), jnp.asarray(info.std, jnp.float32)
  return (images.astype(jnp.float32) / 255.0 - mean) / std


def augment(key: jax.Array, image: jax.Array, label: jax.Array, *, crop: tuple[int, int] | None,
            flip: bool) -> tuple[jax.Array, jax.Array]:
  """Random crop (h, w) and horizontal flip of one example (H, W, 3) / (H, W)."""
  if crop is not None:
    (h, w), (H, W) = crop, label.shape
    top = jax.random.randint(jax.random.fold_in(key, 0), (), 0, H - h + 1)
    left = jax.random.randint(jax.random.fold_in(key, 1), (), 0, W - w + 1)
    image = lax.dynamic_slice(image, (top, left, 0), (h, w, 3))
    label = lax.dynamic_slice(label, (top, left), (h, w))
  if flip:
    do = jax.random.bernoulli(jax.random.fold_in(key, 2))
    image, label = jnp.where(do, image[:, ::-1], image), jnp.where(do, label[:, ::-1], label)
  return image, label


def _crop(config: ml_collections.ConfigDict) -> tuple[int, int] | None:
  d = config.data
  return (d.crop_height, d.crop_width) if d.crop_height and d.crop_width else None


def train_step(state: train.TrainState, batch: Batch, *, model: DeepLabV3,
               tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
               info: segmentation.SegInfo) -> tuple[train.TrainState, dict[str, jax.Array]]:
  """One step on this device's shard; the loss is the mean over all valid pixels of all
  devices (official: CrossEntropyLoss(ignore_index=255), mean)."""
  key = jax.random.fold_in(jax.random.key(state.seed), state.step)
  keys = jax.vmap(functools.partial(jax.random.fold_in, jax.random.fold_in(key, 0)))(
      batch['index'])
  images, labels = jax.vmap(functools.partial(augment, crop=_crop(config),
                                              flip=config.data.flip))(keys, batch['image'],
                                                                      batch['label'])
  labels = labels.astype(jnp.int32)
  valid = labels < info.num_classes  # 255 and any stray value are ignored.
  count = lax.psum(valid.sum(), parallel.DATA_AXIS)
  dropout_key = jax.random.fold_in(jax.random.fold_in(key, 1), lax.axis_index(parallel.DATA_AXIS))

  def loss_fn(params):
    (logits, _), updates = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, normalize(images, info), train=True,
        mutable=['batch_stats'], rngs={'dropout': dropout_key})
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
    # A psum'd loss: with check_vma the gradient is then the global-batch one (see train.py).
    loss = lax.psum(jnp.sum(ce * valid), parallel.DATA_AXIS) / jnp.maximum(count, 1)
    return loss, (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  correct = lax.psum(jnp.sum((jnp.argmax(logits, -1) == labels) & valid), parallel.DATA_AXIS)
  metrics = {'loss': loss, 'accuracy': correct / jnp.maximum(count, 1)}
  return train.apply_gradients(state, tx, grads, batch_stats), metrics


def eval_step(state: train.TrainState, batch: Batch, *, model: DeepLabV3,
              info: segmentation.SegInfo) -> jax.Array:
  """Confusion matrix (K, K) of one evaluation batch, summed over devices."""
  logits, _ = model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                          normalize(batch['image'], info), train=False)
  conf = metrics.confusion_matrix(batch['label'], jnp.argmax(logits, -1), info.num_classes,
                                  weights=batch['mask'][:, None, None])
  return lax.psum(conf, parallel.DATA_AXIS)


def evaluate(p_eval_step, state: train.TrainState, source: segmentation.SegSource,
             config: ml_collections.ConfigDict, info: segmentation.SegInfo,
             mesh) -> dict[str, Any]:
  """mIoU, pixel accuracy and per-class IoU over the evaluation split."""
  conf = None
  for batch in segmentation.eval_batches(source, config.eval.batch_size,
                                         num_examples=config.eval.num_examples,
                                         process_index=jax.process_index(),
                                         process_count=jax.process_count()):
    c = p_eval_step(state, parallel.to_global(mesh, batch))
    conf = c if conf is None else conf + c
  conf = np.asarray(jax.device_get(conf))
  out = metrics.summarize(conf, info.class_names)
  return {'test_miou': out['miou'], 'test_pixel_accuracy': out['pixel_accuracy'],
          'iou_per_class': out['iou_per_class'], 'confusion': conf.tolist()}


def _image_size(d: ml_collections.ConfigDict) -> tuple[int, int] | None:
  return (d.image_height, d.image_width) if d.image_height and d.image_width else None


def load_data(d: ml_collections.ConfigDict, split: str):
  """`segmentation.load_segmentation` with a config's ``data`` fields."""
  return segmentation.load_segmentation(d.name, split, data_dir=d.data_dir or None,
                                        image_size=_image_size(d))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains DeepLabv3 in ``workdir`` (resuming from its newest checkpoint), evaluates
  mIoU, and returns the contents of ``results.json``."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  lead = jax.process_index() == 0
  mesh, t = parallel.make_mesh(), config.train
  for field, size in (('train.batch_size', t.batch_size), ('eval.batch_size',
                                                           config.eval.batch_size)):
    parallel.check_divisible(f'config.{field}', size, jax.device_count(), 'devices')
  train_src, info = load_data(config.data, 'train')
  test_src, _ = load_data(config.data, 'eval')
  total, eval_every, ckpt_every = train.schedule(config, info.num_train)
  model, tx = create_model(config, info.num_classes), create_optimizer(t, total)
  shape = (*(_crop(config) or info.image_shape[:2]), 3)
  state = train.init_state(config.seed, model, tx, shape, mesh)
  p_train_step = parallel.shard_step(
      functools.partial(train_step, model=model, tx=tx, config=config, info=info), mesh,
      outputs=2, donate=True)
  p_eval_step = parallel.shard_step(functools.partial(eval_step, model=model, info=info), mesh)

  def batches(start: int, num_steps: int):
    return input_pipeline.prefetch(
        functools.partial(segmentation.train_batch, train_src, global_batch_size=t.batch_size,
                          seed=config.seed, process_index=jax.process_index(),
                          process_count=jax.process_count()), start, num_steps)

  # The checkpoint manager keeps the best by its metric key; here it holds mIoU.
  out = loop.run(
      workdir, state,
      schedule=loop.Schedule(total, eval_every, ckpt_every, t.log_every, t.keep_checkpoints,
                             t.batch_size),
      config=config.to_dict(),
      step_fn=lambda state, batch: p_train_step(state, parallel.to_global(mesh, batch)),
      batches=batches,
      evaluate=lambda state: evaluate(p_eval_step, state, test_src, config, info, mesh),
      metric='test_miou', desc='segment')
  if out.preempted_at_step is not None:
    return {'preempted_at_step': out.preempted_at_step}
  last_eval, best = out.last_eval, out.best
  results = {'config': config.to_dict(), 'dataset': info.name, 'num_classes': info.num_classes,
             'class_names': list(info.class_names), 'steps': last_eval['step'],
             **{k: last_eval[k] for k in ('test_miou', 'test_pixel_accuracy', 'iou_per_class')},
             'best_test_miou': best['test_miou'], 'best_step': best['step'],
             'num_devices': jax.device_count(), 'device_kind': jax.devices()[0].device_kind, 'jax_version': jax.__version__}
  if lead:
    writers.write_json(os.path.join(workdir, 'results.json'), results)
  return results


def load_model(source: ml_collections.ConfigDict, dtype: str = 'float32'
               ) -> tuple[DeepLabV3, dict[str, Any], dict[str, Any]]:
  """The model to probe: a ``segment`` workdir's newest checkpoint, or a PyTorch file.

  Args:
    source: ``workdir`` (a trained ``segment`` run) or ``torch_checkpoint`` (a
      .pth in VainF/torchvision layout, see `gpjax.interop.torch_import`).
    dtype: compute dtype of the probes.

  Returns:
    (model with local BatchNorm, ``{'params', 'batch_stats'}``, the source's
    ``data`` config as a dict, or {} for a PyTorch file).
  """
  if source.torch_checkpoint:
    from gpjax.interop import torch_import  # torch is needed only here.
    state = torch_import.load_state_dict(source.torch_checkpoint)
    model, variables = torch_import.import_deeplab(state, dtype=jnp.dtype(dtype))
    return model, variables, {}
  src = ml_collections.ConfigDict(writers.read_json(os.path.join(source.workdir, 'config.json')))
  raw = checkpoint.restore_raw(source.workdir)
  num_classes = int(np.shape(raw['params']['classifier']['conv']['bias'])[0])
  model = create_model(src, num_classes, axis_name=None).clone(dtype=jnp.dtype(dtype))
  return model, {'params': raw['params'], 'batch_stats': raw['batch_stats']}, src.data.to_dict()


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad field of a ``segment`` config."""
  from gpjax.models.deeplab import BACKBONES
  from gpjax.models.padding import PADDINGS
  from gpjax.validate import DTYPES, ConfigError, at_least, below_one, one_of, steps_or_epochs
  at_least('seed', config.seed, 0)
  d, m, t = config.data, config.model, config.train
  for field in ('image_height', 'image_width', 'crop_height', 'crop_width'):
    at_least(f'data.{field}', d[field], 0)
  if bool(d.crop_height) != bool(d.crop_width):
    raise ConfigError('config.data.crop_height and crop_width must both be 0 or both > 0.')
  one_of('model.backbone', m.backbone, BACKBONES)
  one_of('model.padding', m.padding, PADDINGS)
  one_of('model.head_padding', m.head_padding, PADDINGS)
  one_of('model.dtype', m.dtype, DTYPES)
  for field in ('width', 'aspp_features'):
    at_least(f'model.{field}', m[field], 1)
  below_one('model.dropout', m.dropout)
  one_of('train.optimizer', t.optimizer, ('sgd', 'adam'))
  one_of('train.schedule', t.schedule, ('poly', 'constant'))
  steps_or_epochs(t)
  for field in ('learning_rate', 'backbone_lr_scale', 'weight_decay'):
    at_least(f'train.{field}', t[field], 0.0, float)
  for field in ('batch_size', 'log_every', 'keep_checkpoints'):
    at_least(f'train.{field}', t[field], 1)
  for field in ('eval_every', 'checkpoint_every'):
    at_least(f'train.{field}', t[field], 0)
  at_least('eval.batch_size', config.eval.batch_size, 1)
  at_least('eval.num_examples', config.eval.num_examples, 0)
