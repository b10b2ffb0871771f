"""Random-access image sources for classification, with no TensorFlow (batches:
`gpjax.data.batching`).

Data come from ``tfds.data_source`` (array_record files). The built-in sets of
`gpjax.data.builtin` are generated on first use; any other tfds set must have
been prepared in the data dir beforehand. tensorflow-datasets (and, through
`gpjax.data.builtin`, scikit-learn) load on first use, so the training step and
the benchmarks import this module on machines without them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from gpjax.data import builtin, decoded
from gpjax.errors import ConfigError, DatasetNotPreparedError

Batch = dict[str, np.ndarray]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the trainer need to know about a data set.

  Attributes:
    name: tfds name, e.g. ``'cifar10'``.
    num_classes: number of labels.
    image_shape: (height, width, channels) of the images a `Source` returns.
    num_train: examples in the ``train`` split.
    num_test: examples in the evaluation split (`eval_split`).
    mean: per-channel mean on the 0..1 scale, to normalise with.
    std: per-channel standard deviation on the 0..1 scale.
    class_names: one name per label.
    eval_split: ``'test'``, or ``'validation'`` for sets without a test split
      (ImageNet).
  """

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  num_train: int
  num_test: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  class_names: tuple[str, ...]
  eval_split: str = 'test'


def to_rgb(image: np.ndarray, image_size: int | None = None) -> np.ndarray:
  """Makes one image uint8 RGB, optionally square.

  Args:
    image: (H, W), (H, W, 1) or (H, W, 3) array.
    image_size: if given and the image is not already that square size, the
      shorter side is resized to it (bilinear, antialiased) and the centre
      square is cropped.

  Returns:
    uint8 (H', W', 3).
  """
  image = np.asarray(image, dtype=np.uint8)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  height, width = image.shape[:2]
  if image_size is None or (height, width) == (image_size, image_size):
    return image
  scale = image_size / min(height, width)
  new_w = max(image_size, round(width * scale))
  new_h = max(image_size, round(height * scale))
  resized = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
  resized = np.asarray(resized)
  top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
  return resized[top:top + image_size, left:left + image_size]


class Source:
  """Random access to (image, label) examples of one split.

  Wraps a tfds data source; `read` returns stacked numpy batches, each example decoded once
  (`gpjax.data.decoded`).

  Args:
    tfds_source: what ``tfds.data_source(name, split=...)`` returns: supports
      ``len`` and ``[i]``, giving dicts with ``image`` and ``label``.
    image_size: if given, images are made (image_size, image_size); see `to_rgb`.
  """

  def __init__(self, tfds_source: Any, image_size: int | None = None):
    self._source = tfds_source
    self._image_size = image_size
    self._batched_reads = hasattr(tfds_source, '__getitems__')
    self._decoded = decoded.Decoded(self._decode, len(tfds_source))

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    example = self._source[int(index)]
    return {'image': to_rgb(example['image'], self._image_size),
            'label': int(example['label'])}

  def _raw(self, indices: list[int]) -> list[Mapping[str, Any]]:
    if self._batched_reads:
      try:
        return self._source.__getitems__(indices)  # One call: ~1.5x faster.
      except TypeError:
        # tfds.testing.mock_data installs a __getitems__ with a wrong signature.
        self._batched_reads = False
    return [self._source[i] for i in indices]

  def read(self, indices: np.ndarray) -> Batch:
    """Reads the examples at `indices`.

    Args:
      indices: int array (B,) of example indices, each in [0, len(self)).

    Returns:
      ``{'image': uint8 (B, h, w, 3), 'label': int32 (B,)}``.
    """
    return self._decoded.read(indices)

  def _decode(self, indices: np.ndarray) -> Batch:
    examples = self._raw([int(i) for i in indices])
    images = [to_rgb(ex['image'], self._image_size) for ex in examples]
    labels = np.array([int(ex['label']) for ex in examples], dtype=np.int32)
    return {'image': np.stack(images), 'label': labels}


def _tfds_source(name: str, split: str, data_dir: str | None) -> Any:
  return tfds.data_source(name, split=split, data_dir=data_dir, download=False)


@functools.lru_cache(maxsize=8)
def _source(name: str, split: str, data_dir: str | None, image_size: int | None) -> Source:
  """One `Source` per split and size in a process: the runs of a study share its decoded
  examples."""
  return Source(_tfds_source(name, split, data_dir), image_size)


@functools.lru_cache(maxsize=8)
def _train_mean_std(name: str, data_dir: str | None, image_size: int | None = None,
                    cache_dir: str | None = None) -> tuple[tuple[float, ...], ...]:
  """Per-channel mean and std (0..1 scale) of a set's train split (resized to
  ``image_size`` if given), cached in ``cache_dir/gpjax_mean_std.json`` when given."""
  path = cache_dir and os.path.join(cache_dir, f'gpjax_mean_std_{image_size or 0}.json')
  if path and os.path.isfile(path):
    with open(path) as f:
      saved = json.load(f)
    return tuple(saved['mean']), tuple(saved['std'])
  source = _source(name, 'train', data_dir, image_size)
  counts = np.zeros((3, 256))
  for start in range(0, len(source), 2048):  # Exact moments from 256-bin histograms.
    pixels = source.read(np.arange(start, min(start + 2048, len(source))))['image']
    pixels = pixels.reshape(-1, 3)
    counts += [np.bincount(pixels[:, c], minlength=256) for c in range(3)]
  values, counts = np.arange(256) / 255.0, counts / counts.sum(1, keepdims=True)
  mean = [float(values @ h) for h in counts]
  std = [float(np.sqrt(values**2 @ h - m**2)) for h, m in zip(counts, mean)]
  if path:
    try:
      with open(path, 'w') as f:
        json.dump({'mean': mean, 'std': std}, f)
    except OSError:  # A read-only data dir: computed again next time.
      pass
  return tuple(mean), tuple(std)


def _builtin_info(name: str, data_dir: str | None, image_size: int | None) -> DatasetInfo:
  builder = builtin.prepare(name, data_dir)
  mean, std = _train_mean_std(name, data_dir)
  size = image_size or builtin.IMAGE_SIZE
  names = tuple(builder.info.features['label'].names)
  return DatasetInfo(
      name=name, num_classes=len(names), image_shape=(size, size, 3),
      num_train=builder.info.splits['train'].num_examples,
      num_test=builder.info.splits['test'].num_examples,
      mean=mean, std=std, class_names=names)


def _not_prepared_message(name: str, data_dir_root: str) -> str:
  return (
      f"Data set {name!r} is not prepared (as array_record) in the data dir "
      f"{data_dir_root!r}; prepare it once on a machine with TensorFlow and network "
      f"(`tfds build {name} --data_dir={data_dir_root} --file_format=array_record`, or in "
      f"Python `tfds.builder({name!r}, data_dir={data_dir_root!r})"
      f".download_and_prepare(file_format='array_record')`), then copy the '{name}' folder "
      f"into that data dir.")


def _num_examples(builder: Any, name: str, split: str, data_dir: str | None) -> int:
  try:
    return builder.info.splits[split].num_examples
  except KeyError:
    # tfds.testing.mock_data fakes the records but not the split metadata.
    return len(_tfds_source(name, split, data_dir))


def _tfds_info(
    builder: Any, name: str, data_dir: str | None, image_size: int | None
) -> DatasetInfo:
  features = builder.info.features
  height, width = features['image'].shape[:2]
  if image_size is None and (height is None or width is None):
    raise ValueError(f'{name!r} images vary in size; pass image_size.')
  splits = builder.info.splits
  eval_split = 'validation' if 'validation' in splits and 'test' not in splits else 'test'
  names = tuple(features['label'].names)
  if name.split(':')[0].split('/')[0] == 'cifar10':  # The official code's statistics.
    mean, std = CIFAR10_MEAN, CIFAR10_STD
  else:  # Any other set: its own train split's, computed once.
    mean, std = _train_mean_std(name, data_dir, image_size, str(builder.data_dir))
  return DatasetInfo(
      name=name, num_classes=len(names),
      image_shape=(image_size or height, image_size or width, 3),
      num_train=_num_examples(builder, name, 'train', data_dir),
      num_test=_num_examples(builder, name, eval_split, data_dir),
      mean=mean, std=std, class_names=names, eval_split=eval_split)


def load_source(
    name: str, split: str, *, data_dir: str | None = None, image_size: int | None = None
) -> tuple[Source, DatasetInfo]:
  """Opens one split of a tfds image-classification set for random access.

  Args:
    name: ``'gpjax_photos'`` or ``'gpjax_digits'`` (built here on first use), or
      any tfds set with ``image`` and ``label`` features (``'cifar10'``,
      ``'imagenet2012'``, ...) already prepared as array_record in `data_dir`.
    split: tfds split, e.g. ``'train'``, ``'test'``, ``'train[:90%]'``.
    data_dir: tfds data dir; None means ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``.
    image_size: if given, every image is resized and centre-cropped to
      (image_size, image_size).

  Returns:
    The source and the set's `DatasetInfo`.

  Raises:
    ConfigError: `name` (config.data.name) is neither built in nor a tfds builder.
    DatasetNotPreparedError: a non-built-in set is missing from `data_dir`.
  """
  data_dir = None if data_dir is None else str(data_dir)
  if name in builtin.BUILTIN_NAMES:
    info = _builtin_info(name, data_dir, image_size)
    return _source(name, split, data_dir, image_size), info
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(
        f'config.data.name={name!r} is not allowed; choose a built-in set '
        f'{builtin.BUILTIN_NAMES} or a tensorflow-datasets builder.') from None
  try:
    source = _source(name, split, data_dir, image_size)
  except Exception as e:  # tfds raises assorted types for missing files.
    if builder.is_prepared():
      raise
    raise DatasetNotPreparedError(
        _not_prepared_message(name, str(builder.data_dir_root))) from e
  return source, _tfds_info(builder, name, data_dir, image_size)
