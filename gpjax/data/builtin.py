"""Two small image-classification sets built from pictures that ship with pip packages.

They let every part of the code run end to end with no download and no
TensorFlow: the pictures are read from the installed scikit-image and
scikit-learn packages, and the tfds builders below write them as array_record
files that `tfds.data_source` reads back.

* ``gpjax_photos``: 32x32 crops of 16 real photographs, labelled by photo.
  Each photo is cut at 3/4 of its width: train crops lie entirely in the left
  part, test crops entirely in the right part, so no test pixel was seen in
  training and "which photo is this crop from" is a fair semantic task.
  10,000 train crops (625 per photo) and 2,000 test crops (125 per photo) at
  uniformly random offsets (seed 0 for train, 1 for test), in random label
  order. Grayscale photos become three identical channels.
* ``gpjax_digits``: scikit-learn's 1,797 8x8 handwritten digits, each pixel
  repeated 4x4 to 32x32, values 0..16 scaled to 0..255 (``rint(v * 255 / 16)``),
  three identical channels. A fixed random permutation (seed 0, not
  stratified) puts 297 digits in test and 1,500 in train; each split keeps the
  original ``load_digits`` order.

Both store ``image`` as ``tfds.features.Tensor`` (``tfds.features.Image`` would
need TensorFlow to encode) plus a provenance feature (crop offset or digit
index) so anyone can check an example against its source.
"""

from __future__ import annotations

import importlib.resources
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

IMAGE_SIZE = 32
BUILTIN_NAMES = ('gpjax_photos', 'gpjax_digits')

# (class name, package holding the file, file name). Only real photographs whose
# files are inside the wheels: skimage.data functions marked "fetch" download via
# pooch, and synthetic pictures (logo, chessboard, phantom) carry no photo
# statistics. retina.jpg is left out because its black border would give many
# identical all-zero crops.
PHOTOS = (
    ('astronaut', 'skimage.data', 'astronaut.png'),
    ('brick', 'skimage.data', 'brick.png'),
    ('camera', 'skimage.data', 'camera.png'),
    ('cell', 'skimage.data', 'cell.png'),
    ('chelsea', 'skimage.data', 'chelsea.png'),
    ('coffee', 'skimage.data', 'coffee.png'),
    ('coins', 'skimage.data', 'coins.png'),
    ('grass', 'skimage.data', 'grass.png'),
    ('gravel', 'skimage.data', 'gravel.png'),
    ('hubble_deep_field', 'skimage.data', 'hubble_deep_field.jpg'),
    ('immunohistochemistry', 'skimage.data', 'ihc.png'),
    ('moon', 'skimage.data', 'moon.png'),
    ('motorcycle', 'skimage.data', 'motorcycle_left.png'),
    ('rocket', 'skimage.data', 'rocket.jpg'),
    ('china', 'sklearn.datasets.images', 'china.jpg'),
    ('flower', 'sklearn.datasets.images', 'flower.jpg'),
)
PHOTO_TRAIN_FRACTION = 0.75  # Left part of each photo's width for train crops.
PHOTO_SPLITS = {'train': (10_000, 0), 'test': (2_000, 1)}  # (size, seed).
DIGITS_NUM_TEST = 297
_DIGITS_SEED = 0

# Generation never downloads; skipping the GCS probe keeps it offline-safe and
# skipping statistics keeps it to a few seconds.
_DOWNLOAD_CONFIG = tfds.download.DownloadConfig(
    try_download_gcs=False,
    compute_stats=tfds.download.ComputeStatsMode.SKIP,
)


def photo_path(package: str, filename: str) -> epath.Path:
  """Returns the on-disk path of a picture shipped inside an installed package."""
  return epath.Path(str(importlib.resources.files(package) / filename))


def load_photo(package: str, filename: str) -> np.ndarray:
  """Reads one shipped photo as RGB.

  Args:
    package: importable package holding the file, e.g. ``'skimage.data'``.
    filename: file name inside that package.

  Returns:
    uint8 array (H, W, 3); grayscale pictures get three identical channels.
  """
  with Image.open(photo_path(package, filename)) as image:
    array = np.asarray(image)
  if array.ndim == 2:
    array = np.repeat(array[..., None], 3, axis=-1)
  return np.ascontiguousarray(array[..., :3], dtype=np.uint8)


def photo_column_range(width: int, split: str) -> tuple[int, int]:
  """Columns [start, stop) of a photo that the crops of `split` may cover."""
  boundary = int(round(width * PHOTO_TRAIN_FRACTION))
  return (0, boundary) if split == 'train' else (boundary, width)


def photo_crops(
    photos: list[np.ndarray], split: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Cuts the deterministic random crops of one split.

  Args:
    photos: RGB uint8 arrays (H_i, W_i, 3), in `PHOTOS` order.
    split: ``'train'`` or ``'test'``.

  Returns:
    images: uint8 (N, 32, 32, 3); labels: int64 (N,), the photo index;
    origins: int64 (N, 2), the (row, column) of each crop's top-left pixel.
  """
  size, seed = PHOTO_SPLITS[split]
  rng = np.random.default_rng(seed)
  # Balanced classes in a random order (records are not shuffled by tfds).
  labels = rng.permutation(np.arange(size) % len(photos))
  images = np.empty((size, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  origins = np.empty((size, 2), np.int64)
  for i, label in enumerate(labels):
    photo = photos[label]
    start, stop = photo_column_range(photo.shape[1], split)
    row = rng.integers(0, photo.shape[0] - IMAGE_SIZE + 1)
    col = rng.integers(start, stop - IMAGE_SIZE + 1)
    images[i] = photo[row:row + IMAGE_SIZE, col:col + IMAGE_SIZE]
    origins[i] = (row, col)
  return images, labels.astype(np.int64), origins


def digits_images() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits as 32x32 RGB uint8.

  Returns:
    images: uint8 (1797, 32, 32, 3); labels: int64 (1797,), in load_digits order.
  """
  from sklearn import datasets as sk_datasets  # 0.8 s to import: only when a set is built.
  digits = sk_datasets.load_digits()
  values = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
  scale = IMAGE_SIZE // values.shape[1]
  values = values.repeat(scale, axis=1).repeat(scale, axis=2)
  return np.repeat(values[..., None], 3, axis=-1), digits.target.astype(np.int64)


def digits_split_indices(split: str) -> np.ndarray:
  """Indices into ``load_digits()`` of one split, ascending."""
  order = np.random.default_rng(_DIGITS_SEED).permutation(1797)
  chosen = order[:DIGITS_NUM_TEST] if split == 'test' else order[DIGITS_NUM_TEST:]
  return np.sort(chosen)


def _image_feature() -> tfds.features.Tensor:
  # Raw bytes instead of the default int64 list: 4x smaller files and
  # decoding is one np.frombuffer.
  return tfds.features.Tensor(
      shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
      dtype=np.uint8,
      encoding=tfds.features.Encoding.BYTES,
  )


class GpjaxPhotos(tfds.core.GeneratorBasedBuilder):
  """32x32 crops of photographs shipped with scikit-image and scikit-learn."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # Generation looks for metadata next to the code; a package module has none,
  # and this avoids relying on importlib_resources being importable.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': _image_feature(),
            'label': tfds.features.ClassLabel(names=[p[0] for p in PHOTOS]),
            'origin': tfds.features.Tensor(shape=(2,), dtype=np.int64),
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    photos = [load_photo(package, filename) for _, package, filename in PHOTOS]
    return {split: self._generate_examples(photos, split) for split in PHOTO_SPLITS}

  def _generate_examples(self, photos, split) -> Iterator[tuple[int, dict]]:
    images, labels, origins = photo_crops(photos, split)
    for i in range(len(labels)):
      yield i, {'image': images[i], 'label': labels[i], 'origin': origins[i]}


class GpjaxDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 digits upscaled to 32x32x3."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': _image_feature(),
            'label': tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
            'index': tfds.features.Scalar(dtype=np.int64),  # Into load_digits().
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    images, labels = digits_images()
    return {
        split: self._generate_examples(images, labels, split)
        for split in ('train', 'test')
    }

  def _generate_examples(self, images, labels, split) -> Iterator[tuple[int, dict]]:
    for i, index in enumerate(digits_split_indices(split)):
      yield i, {'image': images[index], 'label': labels[index], 'index': index}


def prepare(name: str, data_dir: epath.PathLike | None = None) -> tfds.core.DatasetBuilder:
  """Builds a built-in set into `data_dir` unless it is already there.

  Args:
    name: one of `BUILTIN_NAMES`.
    data_dir: tfds data dir; None means tfds's default (``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).

  Returns:
    The prepared builder, ready for ``as_data_source``.
  """
  if name not in BUILTIN_NAMES:
    raise ValueError(f'{name!r} is not a built-in set; choose from {BUILTIN_NAMES}.')
  builder_cls = GpjaxPhotos if name == 'gpjax_photos' else GpjaxDigits
  builder = builder_cls(data_dir=data_dir, file_format='array_record')
  if not builder.is_prepared():
    try:
      builder.download_and_prepare(download_config=_DOWNLOAD_CONFIG)
    except Exception:
      # Several processes sharing a data dir may race to build; the output is
      # identical, so losing the race is fine as long as someone finished.
      if not builder_cls(data_dir=data_dir).is_prepared():
        raise
      builder = builder_cls(data_dir=data_dir)
  return builder
