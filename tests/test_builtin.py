"""Tests for gpjax.data.builtin: offline generation, contents, determinism."""

import os
import sys

import numpy as np
import pytest
import skimage.io
import tensorflow_datasets as tfds
from conftest import offline
from sklearn import datasets as sk_datasets

from gpjax.data import builtin


GRAY_PHOTOS = {'brick', 'camera', 'cell', 'coins', 'grass', 'gravel', 'moon'}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """Both built-in sets, built once with every socket call failing."""
  path = tmp_path_factory.mktemp('tfds')
  with pytest.MonkeyPatch.context() as patch:
    offline(patch)
    for name in builtin.BUILTIN_NAMES:
      builtin.prepare(name, path)
  return path


def _read_all(name, split, data_dir):
  source = tfds.data_source(name, split=split, data_dir=str(data_dir), download=False)
  return [source[i] for i in range(len(source))]


def test_built_without_tensorflow(data_dir):
  assert 'tensorflow' not in sys.modules
  for name in builtin.BUILTIN_NAMES:
    assert tfds.builder(name, data_dir=str(data_dir)).is_prepared()


@pytest.mark.parametrize('name, split, size, num_classes', [
    ('gpjax_photos', 'train', 10_000, 16),
    ('gpjax_photos', 'test', 2_000, 16),
    ('gpjax_digits', 'train', 1_500, 10),
    ('gpjax_digits', 'test', 297, 10),
])
def test_split_contents(data_dir, name, split, size, num_classes):
  examples = _read_all(name, split, data_dir)
  assert len(examples) == size
  images = np.stack([ex['image'] for ex in examples])
  labels = np.array([ex['label'] for ex in examples])
  assert images.dtype == np.uint8 and images.shape == (size, 32, 32, 3)
  assert labels.min() == 0 and labels.max() == num_classes - 1
  # Grayscale sources become three equal channels; colour photos keep theirs.
  gray = images.min(-1) == images.max(-1)
  if name == 'gpjax_digits':
    assert gray.all()
  else:
    names = np.array([p[0] for p in builtin.PHOTOS])[labels]
    from_gray = np.isin(names, list(GRAY_PHOTOS))
    assert gray[from_gray].all()
    # A few colour crops are flat black background (astronaut's right edge).
    assert gray[~from_gray].all(axis=(1, 2)).mean() < 0.01


def test_second_build_is_byte_identical(data_dir, tmp_path):
  for name in builtin.BUILTIN_NAMES:
    first = tfds.builder(name, data_dir=str(data_dir)).data_path
    second = builtin.prepare(name, tmp_path).data_path
    files = sorted(p.name for p in first.iterdir())
    assert sorted(p.name for p in second.iterdir()) == files
    assert any(f.endswith('array_record-00000-of-00001') for f in files)
    for f in files:
      assert (first / f).read_bytes() == (second / f).read_bytes(), (name, f)


def test_prepare_reuses_existing_data(data_dir):
  record = tfds.builder('gpjax_digits', data_dir=str(data_dir)).data_path
  before = {p.name: os.stat(p).st_mtime_ns for p in record.iterdir()}
  builtin.prepare('gpjax_digits', data_dir)
  assert {p.name: os.stat(p).st_mtime_ns for p in record.iterdir()} == before


def test_digits_are_sklearn_digits(data_dir):
  digits = sk_datasets.load_digits()
  seen = []
  for split in ('train', 'test'):
    examples = _read_all('gpjax_digits', split, data_dir)
    indices = [ex['index'] for ex in examples]
    assert indices == sorted(indices)
    assert [ex['label'] for ex in examples] == digits.target[indices].tolist()
    seen += indices
  assert sorted(seen) == list(range(1797))

  example = _read_all('gpjax_digits', 'test', data_dir)[5]
  source = digits.images[example['index']]
  for row in range(32):
    for col in range(32):
      expected = round(source[row // 4, col // 4] * 255 / 16)
      assert (example['image'][row, col] == expected).all(), (row, col)
  # Full ink is white and no ink is black.
  assert set(np.unique(example['image'])) >= {0, 255}


def test_photo_names_and_files():
  names = [name for name, _, _ in builtin.PHOTOS]
  assert len(set(names)) == len(names) == 16
  for _, package, filename in builtin.PHOTOS:
    assert builtin.photo_path(package, filename).is_file()


@pytest.mark.parametrize('split', ['train', 'test'])
def test_photo_crops_come_from_their_photo(data_dir, split):
  builder = tfds.builder('gpjax_photos', data_dir=str(data_dir))
  assert builder.info.features['label'].names == [p[0] for p in builtin.PHOTOS]
  examples = _read_all('gpjax_photos', split, data_dir)
  labels = np.array([ex['label'] for ex in examples])
  np.testing.assert_array_equal(np.bincount(labels), len(examples) // 16)

  first_of_each = {}
  for ex in examples:
    first_of_each.setdefault(ex['label'], ex)
  for label, ex in sorted(first_of_each.items()):
    _, package, filename = builtin.PHOTOS[label]
    # An independent reader, not the builder's own loader.
    photo = skimage.io.imread(str(builtin.photo_path(package, filename)))
    if photo.ndim == 2:
      photo = np.stack([photo] * 3, axis=-1)
    row, col = ex['origin']
    np.testing.assert_array_equal(
        ex['image'], photo[row:row + 32, col:col + 32, :3], err_msg=filename)


def test_train_and_test_crops_cover_disjoint_columns(data_dir):
  widths = [builtin.load_photo(p, f).shape[1] for _, p, f in builtin.PHOTOS]
  train = _read_all('gpjax_photos', 'train', data_dir)
  test = _read_all('gpjax_photos', 'test', data_dir)
  train_right = np.zeros(16, int)
  test_left = np.full(16, 10**6)
  for ex in train:
    train_right[ex['label']] = max(train_right[ex['label']], ex['origin'][1] + 32)
  for ex in test:
    test_left[ex['label']] = min(test_left[ex['label']], ex['origin'][1])
  boundary = np.round(np.array(widths) * 0.75)
  assert (train_right <= boundary).all() and (test_left >= boundary).all()
  # The crops do spread over their whole region, not one spot.
  assert (train_right > boundary - 8).all()
  crops = {ex['image'].tobytes() for ex in train}
  assert len(crops) > 9_900
