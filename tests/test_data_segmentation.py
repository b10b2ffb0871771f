"""Segmentation data: the built-in street scenes built offline and read back (the scenes
themselves: test_street), shrink-and-pad, batches, Cityscapes label ids, the VOC builder,
clear errors."""

import os
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from gpjax.data import batching, segmentation, street


@pytest.fixture(scope='session')
def street_dir(builtin_dir):
  """gpjax_street/small, built with every socket call failing (`builtin_dir`)."""
  return builtin_dir('gpjax_street')


def test_builtin_set_is_built_offline_and_reads_back(street_dir):
  assert 'tensorflow' not in sys.modules
  source, info = segmentation.load_segmentation('gpjax_street', 'eval', data_dir=street_dir)
  assert (info.num_classes, info.image_shape, info.num_train, info.num_eval, info.eval_split) == (
      8, (64, 128, 3), 1500, 300, 'test')
  assert len(source) == 300
  for i in (0, 123):
    image, label = source.example(i)
    want_image, want_label = street.scene('test', i, 64, 128)
    np.testing.assert_array_equal(image, want_image)
    np.testing.assert_array_equal(label, want_label)


def test_fit_shrinks_keeping_aspect_and_pads_with_ignore():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (40, 100, 3), dtype=np.uint8)
  label = rng.integers(0, 5, (40, 100)).astype(np.uint8)
  out_image, out_label = segmentation.fit(image, label, (32, 64))
  assert out_image.shape == (32, 64, 3) and out_label.shape == (32, 64)
  # 100 -> 64 wide (scale 0.64), 40 -> 26 high, then 6 rows of padding.
  assert (out_label[26:] == 255).all() and (out_image[26:] == 0).all()
  assert set(np.unique(out_label[:26])) <= set(range(5))  # Nearest: no blended labels.
  small_image, small_label = segmentation.fit(image[:20, :30], label[:20, :30], (32, 64))
  np.testing.assert_array_equal(small_image[:20, :30], image[:20, :30])  # Never enlarged.
  assert (small_label[20:] == 255).all() and (small_label[:, 30:] == 255).all()
  same = segmentation.fit(image, label, (40, 100))
  assert same[0] is image and same[1] is label


def test_batches(street_dir):
  source, _ = segmentation.load_segmentation('gpjax_street', 'train', data_dir=street_dir,
                                             image_size=(32, 64))
  a = batching.host_batch(source, 3, global_batch_size=4, seed=0)
  b = batching.host_batch(source, 3, global_batch_size=4, seed=0, process_index=1,
                          process_count=2)
  assert a['image'].shape == (4, 32, 64, 3) and a['label'].shape == (4, 32, 64)
  np.testing.assert_array_equal(b['label'], a['label'][2:])
  batches = list(batching.eval_batches(source, 4, num_examples=10,
                                       pad_label=segmentation.IGNORE_LABEL))
  assert [int(x['mask'].sum()) for x in batches] == [4, 4, 2]
  assert (batches[-1]['label'][2:] == 255).all()
  np.testing.assert_array_equal(batches[1]['label'][0], source.example(4)[1])


def test_cityscapes_label_ids_become_train_ids():
  with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
    source, info = segmentation.load_segmentation('cityscapes', 'eval', image_size=(32, 64))
    raw = source._source[0]['segmentation_label'][..., 0]
    _, label = source.example(0)
  assert info.num_classes == 19 and info.eval_split == 'validation'
  lut = {7: 0, 8: 1, 26: 13, 33: 18, 0: 255, 6: 255, 34: 255, 255: 255}
  small = np.asarray(Image.fromarray(raw).resize((64, 32), Image.Resampling.NEAREST))
  for raw_id, train_id in lut.items():
    assert (label[small == raw_id] == train_id).all()


def test_missing_sets_say_how_to_prepare(tmp_path):
  with pytest.raises(segmentation.DatasetNotPreparedError, match='tfds build cityscapes'):
    segmentation.load_segmentation('cityscapes', 'eval', data_dir=str(tmp_path))
  with pytest.raises(segmentation.DatasetNotPreparedError,
                     match=f'extract VOCtrainval_11-May-2012.tar into {tmp_path}'):
    segmentation.load_segmentation('voc/2012', 'eval', data_dir=str(tmp_path))


def test_voc_built_from_the_official_files(tmp_path):
  """A two-image VOCdevkit: masks are palette PNGs; labels come back as the palette indices."""
  root = tmp_path / 'downloads' / 'manual' / 'VOCdevkit' / 'VOC2012'
  for sub in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
    os.makedirs(root / sub)
  rng = np.random.default_rng(0)
  masks = {}
  for name, (h, w) in (('a', (30, 40)), ('b', (50, 20))):
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        root / 'JPEGImages' / f'{name}.jpg')
    mask = rng.choice(np.array([0, 3, 15, 20, 255], np.uint8), (h, w))
    png = Image.fromarray(mask, mode='P')
    png.putpalette(list(rng.integers(0, 256, 768, dtype=np.uint8)))
    png.save(root / 'SegmentationClass' / f'{name}.png')
    masks[name] = mask
  (root / 'ImageSets/Segmentation/train.txt').write_text('a\n')
  (root / 'ImageSets/Segmentation/val.txt').write_text('b\na\n')
  source, info = segmentation.load_segmentation('voc/2012', 'eval', data_dir=str(tmp_path),
                                                image_size=(48, 48))
  assert info.num_classes == 21 and len(source) == 2
  _, label = source.example(0)  # 'b' (50x20) shrunk to 48x19, padded.
  assert label.shape == (48, 48) and (label[:, 19:] == 255).all()
  _, label = source.example(1)  # 'a' (30x40) fits: kept exactly.
  np.testing.assert_array_equal(label[:30, :40], masks['a'])
