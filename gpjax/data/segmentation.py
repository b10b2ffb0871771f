"""Semantic-segmentation data from tfds array_record files, with no TensorFlow.

Sets (``name`` of `load_segmentation`):

* ``gpjax_street`` (= ``gpjax_street/small``, 64x128) and ``gpjax_street/large``
  (128x256): built here on first use from photos in pip packages (`street`).
* ``cityscapes``: tfds ``cityscapes/semantic_segmentation`` (fine labels, 19
  classes; label ids mapped to the standard train ids, the rest to 255). The
  user prepares it once (it needs a manual download).
* ``voc/2012``: PASCAL VOC 2012 segmentation (21 classes, 255 = boundary).
  tfds's own ``voc`` holds boxes, not masks, so `VocSegmentation` below builds
  the masks from the official ``VOCtrainval_11-May-2012.tar``, extracted by the
  user into ``<data_dir>/downloads/manual/`` (built on first use).

Every example becomes ``image`` uint8 (h, w, 3) and ``label`` uint8 (h, w). With
``image_size=(h, w)`` a different-sized example is shrunk (never enlarged) to
fit, keeping its aspect ratio (bilinear for images, nearest for labels), and
padded at the bottom/right (image black, label 255), as VainF's pad-if-needed.
Batches: `gpjax.data.batching` (``pad_label=IGNORE_LABEL`` for evaluation).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from gpjax.data import decoded, input_pipeline, street

Batch = dict[str, np.ndarray]
IGNORE_LABEL = 255

VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car',
               'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
               'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
CITYSCAPES_CLASSES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
                      'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car',
                      'truck', 'bus', 'train', 'motorcycle', 'bicycle')
# Cityscapes label id -> train id (cityscapesScripts labels.py); every other id -> 255.
_CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                         23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


# Building never downloads: no GCS probe, no statistics (seconds instead of minutes).
_OFFLINE = dict(try_download_gcs=False, compute_stats=tfds.download.ComputeStatsMode.SKIP)


class DatasetNotPreparedError(input_pipeline.DatasetNotPreparedError):
  """A segmentation set is missing from the data dir and cannot be built here."""


@dataclasses.dataclass(frozen=True)
class SegInfo:
  """What the model and the jobs need to know about a segmentation set.

  Attributes:
    name: the name given to `load_segmentation`.
    num_classes: K; labels are 0..K-1 or `IGNORE_LABEL`.
    class_names: K names.
    image_shape: (h, w, 3) of the examples a `SegSource` returns.
    num_train: examples in ``train``.
    num_eval: examples in `eval_split`.
    eval_split: ``'test'`` or ``'validation'``.
    mean: per-channel mean (0..1 scale) to normalise with (ImageNet's, as the
      official code).
    std: per-channel standard deviation.
  """
  name: str
  num_classes: int
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  num_train: int
  num_eval: int
  eval_split: str
  mean: tuple[float, float, float] = input_pipeline.IMAGENET_MEAN
  std: tuple[float, float, float] = input_pipeline.IMAGENET_STD


def _label_lut(mapping: dict[int, int] | None) -> np.ndarray:
  """uint8 (256,): raw label value -> class id or 255."""
  if mapping is None:
    return np.arange(256, dtype=np.uint8)
  lut = np.full(256, IGNORE_LABEL, np.uint8)
  for raw, cls in mapping.items():
    lut[raw] = cls
  return lut


def fit(image: np.ndarray, label: np.ndarray, size: tuple[int, int] | None
        ) -> tuple[np.ndarray, np.ndarray]:
  """Shrinks (keeping the aspect ratio) and pads one example to ``size`` = (h, w).

  Args:
    image: uint8 (H, W, 3); label: uint8 (H, W).
    size: target (h, w), or None to keep the example as it is.

  Returns:
    image uint8 (h, w, 3), padded black; label uint8 (h, w), padded with 255.
  """
  if size is None or image.shape[:2] == tuple(size):
    return image, label
  (H, W), (h, w) = image.shape[:2], size
  scale = min(1.0, h / H, w / W)
  if scale < 1.0:
    new = (max(1, round(W * scale)), max(1, round(H * scale)))  # PIL sizes are (w, h).
    image = np.asarray(Image.fromarray(image).resize(new, Image.Resampling.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize(new, Image.Resampling.NEAREST))
  out_image = np.zeros((h, w, 3), np.uint8)
  out_label = np.full((h, w), IGNORE_LABEL, np.uint8)
  out_image[:image.shape[0], :image.shape[1]] = image
  out_label[:label.shape[0], :label.shape[1]] = label
  return out_image, out_label


class SegSource:
  """Random access to the (image, label) examples of one split.

  Args:
    tfds_source: what ``builder.as_data_source(split)`` returns.
    image_key, label_key: the feature names of image and label.
    lut: uint8 (256,) mapping raw label values to class ids or 255.
    image_size: (h, w) to fit every example to (see `fit`), or None.
  """

  def __init__(self, tfds_source: Any, image_key: str, label_key: str, lut: np.ndarray,
               image_size: tuple[int, int] | None = None):
    self._source, self._keys, self._lut = tfds_source, (image_key, label_key), lut
    self._size = None if image_size is None else tuple(image_size)
    self._decoded = decoded.Decoded(self._decode, len(tfds_source))

  def __len__(self) -> int:
    return len(self._source)

  def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
    """image uint8 (h, w, 3) and label uint8 (h, w) of one example."""
    ex = self._source[int(index)]
    image = np.asarray(ex[self._keys[0]], np.uint8)
    label = np.asarray(ex[self._keys[1]], np.uint8)
    label = self._lut[label[..., 0] if label.ndim == 3 else label]
    return fit(image, label, self._size)

  def read(self, indices: Any) -> Batch:
    """``{'image': uint8 (B, h, w, 3), 'label': uint8 (B, h, w)}`` of the examples at indices,
    each decoded once (`gpjax.data.decoded`)."""
    return self._decoded.read(indices)

  def _decode(self, indices: np.ndarray) -> Batch:
    pairs = [self.example(i) for i in indices]
    return {'image': np.stack([p[0] for p in pairs]), 'label': np.stack([p[1] for p in pairs])}


class VocSegmentation(tfds.core.GeneratorBasedBuilder):
  """PASCAL VOC 2012 segmentation masks (train 1,464, validation 1,449 images)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Extract VOCtrainval_11-May-2012.tar (from '
                                  'http://host.robots.ox.ac.uk/pascal/VOC/voc2012/) into '
                                  'manual_dir, so that manual_dir/VOCdevkit/VOC2012/ exists.')
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            # Files are stored as they are (JPEG) or re-encoded by PIL (PNG): no TensorFlow.
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
            'label': tfds.features.Image(shape=(None, None, 1), encoding_format='png'),
            'name': tfds.features.Text(),
        }))

  def _split_generators(self, dl_manager):
    root = epath.Path(dl_manager.manual_dir) / 'VOCdevkit' / 'VOC2012'
    return {split: self._generate_examples(root, listed)
            for split, listed in (('train', 'train'), ('validation', 'val'))}

  def _generate_examples(self, root: epath.Path, listed: str) -> Iterator[tuple[str, dict]]:
    names = (root / 'ImageSets' / 'Segmentation' / f'{listed}.txt').read_text().split()
    for name in names:
      # The masks are palette PNGs; their indices (0..20, 255) are the labels. Stored as
      # grayscale so that any decoder returns the indices, not palette colours.
      with Image.open(root / 'SegmentationClass' / f'{name}.png') as mask:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(mask, np.uint8)).save(buffer, format='png')  # Mode L.
      yield name, {'image': root / 'JPEGImages' / f'{name}.jpg', 'label': buffer.getvalue(),
                   'name': name}


def _not_prepared(name: str, data_dir: str, how: str) -> DatasetNotPreparedError:
  return DatasetNotPreparedError(f'Segmentation set {name!r} is not prepared in the tfds data dir '
                                 f'{data_dir!r}. {how}')


def _builder(name: str, data_dir: str | None) -> tuple[Any, str, str, np.ndarray, tuple]:
  """(prepared builder, image key, label key, label LUT, class names) of a set."""
  if name.split('/')[0] == 'gpjax_street':
    config = name.split('/')[1] if '/' in name else 'small'
    builder = street.GpjaxStreet(config=config, data_dir=data_dir, file_format='array_record')
    if not builder.is_prepared():
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(**_OFFLINE))
    return builder, 'image', 'label', _label_lut(None), street.CLASS_NAMES
  if name in ('cityscapes', 'cityscapes/semantic_segmentation'):
    # Not checked here: tfds.testing.mock_data fakes the records of an unprepared builder.
    return (tfds.builder('cityscapes/semantic_segmentation', data_dir=data_dir), 'image_left',
            'segmentation_label', _label_lut(_CITYSCAPES_TRAIN_IDS), CITYSCAPES_CLASSES)
  if name in ('voc/2012', 'voc_segmentation'):
    builder = VocSegmentation(data_dir=data_dir, file_format='array_record')
    if not builder.is_prepared():
      manual = os.path.join(str(builder.data_dir_root), 'downloads', 'manual')
      if not os.path.isdir(os.path.join(manual, 'VOCdevkit', 'VOC2012')):
        raise _not_prepared(name, str(builder.data_dir_root), (
            "tfds's own 'voc' has no masks, so it is built here from the official files: "
            f'extract VOCtrainval_11-May-2012.tar into {manual}/ (giving {manual}/VOCdevkit/'
            'VOC2012/) and run again; it is built on first use, no TensorFlow needed.'))
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual, **_OFFLINE))
    return builder, 'image', 'label', _label_lut(None), VOC_CLASSES
  raise ValueError(f'Unknown segmentation set {name!r}; choose gpjax_street, gpjax_street/large, '
                   'cityscapes or voc/2012.')


def load_segmentation(name: str, split: str, *, data_dir: str | None = None,
                      image_size: tuple[int, int] | None = None) -> tuple[SegSource, SegInfo]:
  """Opens one split of a segmentation set.

  Args:
    name: see the module docstring.
    split: a tfds split (``'train'``, ``'test'``, ``'validation[:100]'``, ...);
      ``'eval'`` means the set's evaluation split.
    data_dir: tfds data dir; None means ``$TFDS_DATA_DIR`` or ~/tensorflow_datasets.
    image_size: (h, w) to fit every example to (required for voc/2012, whose
      images differ in size), or None to keep the stored size.

  Returns:
    The source and the set's `SegInfo`.

  Raises:
    DatasetNotPreparedError: cityscapes or voc/2012 files are missing, with how
      to prepare them.
  """
  data_dir = None if data_dir is None else str(data_dir)
  builder, image_key, label_key, lut, names = _builder(name, data_dir)
  splits = builder.info.splits
  eval_split = 'test' if 'test' in splits and name.startswith('gpjax') else 'validation'
  shape = builder.info.features[image_key].shape
  if image_size is None and None in shape[:2]:
    raise ValueError(f'{name!r} images differ in size: pass image_size=(h, w).')
  size = tuple(image_size) if image_size else tuple(shape[:2])
  try:
    source = _source(name, eval_split if split == 'eval' else split, data_dir,
                     None if image_size is None else tuple(image_size))
  except Exception as e:  # tfds raises assorted types for missing files.
    if builder.is_prepared() or not name.startswith('cityscapes'):
      raise
    raise _not_prepared(name, str(builder.data_dir_root), (
        'Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from '
        'https://www.cityscapes-dataset.com (login needed) into <data_dir>/downloads/manual/, '
        'then once, on a machine with TensorFlow: tfds build cityscapes/semantic_segmentation '
        f'--data_dir={builder.data_dir_root} --file_format=array_record')) from e
  info = SegInfo(name=name, num_classes=len(names), class_names=tuple(names),
                 image_shape=(*size, 3), num_train=_count(splits, 'train', builder),
                 num_eval=_count(splits, eval_split, builder), eval_split=eval_split)
  return source, info


@functools.lru_cache(maxsize=8)
def _source(name: str, split: str, data_dir: str | None,
            image_size: tuple[int, int] | None) -> SegSource:
  """One `SegSource` per split and size in a process: the runs of a study share its decoded
  examples."""
  builder, image_key, label_key, lut, _ = _builder(name, data_dir)
  return SegSource(builder.as_data_source(split=split), image_key, label_key, lut, image_size)


def _count(splits: Any, split: str, builder: Any) -> int:
  try:
    return splits[split].num_examples
  except KeyError:  # tfds.testing.mock_data fakes the records but not the split metadata.
    return len(builder.as_data_source(split=split))
