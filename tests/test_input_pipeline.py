"""Tests for gpjax.data.input_pipeline."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import offline
from sklearn import datasets as sk_datasets

from gpjax.data import batching, builtin
from gpjax.data import input_pipeline as ip


@pytest.fixture(scope='module')
def data_dir(builtin_dir):
  for name in builtin.BUILTIN_NAMES:
    path = builtin_dir(name)
  return path


@pytest.fixture(scope='module')
def digits_test(data_dir):
  return ip.load_source('gpjax_digits', 'test', data_dir=data_dir)


def _raw(name, split, data_dir):
  return tfds.data_source(name, split=split, data_dir=data_dir, download=False)


# --- load_source and DatasetInfo -------------------------------------------------


def test_digits_info_mean_std_from_train_split(digits_test, data_dir):
  _, info = digits_test
  assert info.name == 'gpjax_digits' and info.num_classes == 10
  assert (info.num_train, info.num_test) == (1500, 297)
  assert info.image_shape == (32, 32, 3)
  assert info.class_names == tuple(str(d) for d in range(10))
  # Recomputed from sklearn's 8x8 values: 4x4 upsampling keeps mean and std.
  train = _raw('gpjax_digits', 'train', data_dir)
  values = sk_datasets.load_digits().images[[ex['index'] for ex in train]]
  pixels = np.rint(values * 255 / 16) / 255
  np.testing.assert_allclose(info.mean, [pixels.mean()] * 3, rtol=1e-9)
  np.testing.assert_allclose(info.std, [pixels.std()] * 3, rtol=1e-9)


def test_photos_info(data_dir):
  source, info = ip.load_source('gpjax_photos', 'train', data_dir=data_dir)
  assert len(source) == info.num_train == 10_000 and info.num_test == 2_000
  assert info.class_names == tuple(p[0] for p in builtin.PHOTOS)
  images = np.stack([ex['image'] for ex in _raw('gpjax_photos', 'train', data_dir)])
  pixels = images.reshape(-1, 3)
  np.testing.assert_allclose(info.mean, pixels.mean(0, dtype=np.float64) / 255, rtol=1e-9)
  np.testing.assert_allclose(info.std, pixels.std(0, dtype=np.float64) / 255, rtol=1e-9)
  assert len(set(np.round(info.mean, 4))) == 3  # Colour photos: channels differ.


def test_source_read_matches_tfds(digits_test, data_dir):
  source, _ = digits_test
  raw = _raw('gpjax_digits', 'test', data_dir)
  indices = np.array([296, 0, 17, 17])
  batch = source.read(indices)
  assert batch['image'].dtype == np.uint8 and batch['label'].dtype == np.int32
  for row, i in enumerate(indices):
    np.testing.assert_array_equal(batch['image'][row], raw[int(i)]['image'])
    assert batch['label'][row] == raw[int(i)]['label']
  assert source[17]['label'] == raw[17]['label']


def test_image_size_resizes(data_dir):
  full = _raw('gpjax_digits', 'test', data_dir)[3]['image']
  source, info = ip.load_source('gpjax_digits', 'test', data_dir=data_dir, image_size=64)
  assert info.image_shape == (64, 64, 3)
  image = source.read(np.array([3]))['image'][0]
  assert image.shape == (64, 64, 3)
  # Each 4x4 block becomes 8x8; bilinear interpolation leaves block interiors
  # untouched.
  for dr in (2, 5):
    for dc in (2, 5):
      np.testing.assert_array_equal(image[dr::8, dc::8], full[::4, ::4])
  source, _ = ip.load_source('gpjax_digits', 'test', data_dir=data_dir, image_size=16)
  small = source.read(np.array([3]))['image'][0]
  assert small.shape == (16, 16, 3)
  assert abs(small.mean() - full.mean()) < 1.0  # Antialiased: brightness kept.


def test_to_rgb_gray_and_centre_crop():
  gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
  for image in (gray, gray[..., None]):
    out = ip.to_rgb(image)
    assert out.shape == (3, 4, 3) and (out == gray[..., None]).all()
  # A 30x45 picture whose central 30x30 square is 200 and whose sides are 0:
  # resizing to 20 and cropping the centre keeps only the 200 part.
  picture = np.zeros((30, 45), np.uint8)
  picture[:, 7:38] = 200
  out = ip.to_rgb(picture, 20)
  assert out.shape == (20, 20, 3)
  assert (out[:, 1:-1] == 200).all() and out.mean() > 190
  same = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
  np.testing.assert_array_equal(ip.to_rgb(same, 20), same)


def test_cifar10_under_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    source, info = ip.load_source('cifar10', 'train', data_dir=str(tmp_path))
    raw = tfds.data_source('cifar10', split='train')
    batch = batching.host_batch(source, 3, global_batch_size=8, seed=0)
    indices = batching.batch_indices(3, num_examples=24, global_batch_size=8, seed=0)
    expected = np.stack([raw[int(i)]['image'] for i in indices])
    expected_labels = [raw[int(i)]['label'] for i in indices]
  assert info.mean == (0.4914, 0.4822, 0.4465)
  assert info.std == (0.2023, 0.1994, 0.2010)
  assert (info.num_classes, info.num_train, info.num_test) == (10, 24, 24)
  assert info.image_shape == (32, 32, 3) and len(source) == 24
  np.testing.assert_array_equal(batch['image'], expected)
  np.testing.assert_array_equal(batch['label'], expected_labels)
  assert batch['image'].dtype == np.uint8 and batch['label'].dtype == np.int32


def test_missing_prepared_set_says_how_to_prepare(tmp_path, monkeypatch):
  offline(monkeypatch)
  with pytest.raises(ip.DatasetNotPreparedError) as error:
    ip.load_source('cifar100', 'train', data_dir=str(tmp_path))
  message = str(error.value)
  assert "'cifar100'" in message and str(tmp_path) in message
  assert f'tfds build cifar100 --data_dir={tmp_path} --file_format=array_record' in message
  assert "download_and_prepare(file_format='array_record')" in message


def test_unknown_name(tmp_path):
  with pytest.raises(ValueError, match="config.data.name='not_a_dataset_xyz' is not allowed"):
    ip.load_source('not_a_dataset_xyz', 'train', data_dir=str(tmp_path))
