"""Tests for gpjax.data.examples: canvases keyed by the global index, the fixed test
canvases, shifted pairs, and segmentation crops, colour jitter (torchvision's ColorJitter),
flips and normalisation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from configs import augshift, location, segmentation
from gpjax.data import canvas, examples
from gpjax.data.input_pipeline import DatasetInfo
from gpjax.data.segmentation import SegInfo

INFO = DatasetInfo(name='synthetic', num_classes=10, image_shape=(8, 8, 3), num_train=100,
                   num_test=20, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3),
                   class_names=tuple(str(i) for i in range(10)))


def _batch(n=6, offset=0, size=8):
  rng = np.random.default_rng(0)
  return {'image': jnp.asarray(rng.integers(0, 256, (n, size, size, 3)), jnp.uint8),
          'label': jnp.arange(n, dtype=jnp.int32) % 10,
          'index': jnp.arange(offset, offset + n, dtype=jnp.int32)}


def _config(task='location'):
  config = location.get_config()
  config.task, config.data.grid = task, 2
  return config


def test_make_examples_is_canvas_batch_keyed_by_the_global_index():
  config, key, batch = _config(), jax.random.key(5), _batch()
  images, labels, cells = examples.make_examples(key, batch, config, INFO, flip=True)
  keys = jax.vmap(functools.partial(jax.random.fold_in, key))(batch['index'])
  want, want_cells = canvas.canvas_batch(keys, batch['image'], grid=2, mean=INFO.mean,
                                         std=INFO.std, background='zero', flip=True)
  assert images.shape == (6, 16, 16, 3)
  np.testing.assert_array_equal(images, want)
  np.testing.assert_array_equal(cells, want_cells)
  np.testing.assert_array_equal(labels, cells)  # Location: the label is the cell.
  # A shard holding rows 3..5 of the global batch makes the same three canvases.
  half = {k: v[3:] for k, v in batch.items()}
  np.testing.assert_array_equal(examples.make_examples(key, half, config, INFO, flip=True)[0],
                                images[3:])
  _, labels, _ = examples.make_examples(key, batch, _config('semantic'), INFO, flip=True)
  np.testing.assert_array_equal(labels, batch['label'])


def test_eval_examples_are_fixed_by_the_eval_seed_and_unflipped():
  config, batch = _config(), _batch()
  got = examples.eval_examples(batch, config, INFO)
  want = examples.make_examples(jax.random.key(config.eval.seed), batch, config, INFO,
                                flip=False)
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)
  config.eval.seed += 1
  assert not np.array_equal(examples.eval_examples(batch, config, INFO)[2], got[2])


def test_shifted_pairs_share_the_source_and_differ_in_position():
  config = augshift.get_config()
  config.data.grid = 2
  batch = _batch()
  a, b, labels = examples.make_shifted_pairs(jax.random.key(1), batch, config, INFO, flip=False)
  assert a.shape == b.shape == (6, 16, 16, 3)
  np.testing.assert_array_equal(labels, batch['label'])
  assert not np.array_equal(a, b)
  # The zero background is the mean colour, 0 after normalising: each copy sums to its source.
  source = np.asarray(canvas.normalize(batch['image'], INFO.mean, INFO.std))
  for x in (np.asarray(a), np.asarray(b)):
    np.testing.assert_allclose(x.sum((1, 2, 3)), source.sum((1, 2, 3)), rtol=1e-4, atol=1e-3)
    assert ((np.abs(x).sum(-1) > 0).sum((1, 2)) <= 64).all()


def test_augment_crops_and_flips_image_and_label_together():
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.integers(0, 256, (10, 12, 3)), jnp.uint8)
  label = jnp.asarray(rng.integers(0, 8, (10, 12)), jnp.uint8)
  flips = 0
  for seed in range(16):
    out_image, out_label = examples.augment(jax.random.key(seed), image, label, crop=(4, 5),
                                            flip=True)
    assert out_image.shape == (4, 5, 3) and out_label.shape == (4, 5)
    found = False
    for top in range(7):
      for left in range(8):
        window = np.asarray(label[top:top + 4, left:left + 5])
        for flipped in (False, True):
          w = window[:, ::-1] if flipped else window
          img = np.asarray(image[top:top + 4, left:left + 5])
          img = img[:, ::-1] if flipped else img
          if np.array_equal(w, out_label) and np.array_equal(img, out_image):
            found, flips = True, flips + flipped
    assert found
  assert 0 < flips < 16
  same = examples.augment(jax.random.key(0), image, label, crop=None, flip=False)
  np.testing.assert_array_equal(same[0], image)
  np.testing.assert_array_equal(same[1], label)


def test_segmentation_examples_are_normalised_crops_keyed_by_index():
  config = segmentation.get_config('tiny')
  config.data.crop_height, config.data.crop_width, config.data.flip = 4, 6, True
  assert examples.crop_size(config) == (4, 6)
  info = SegInfo(name='s', num_classes=8, class_names=tuple('abcdefgh'), image_shape=(8, 8, 3),
                 num_train=10, num_eval=10, eval_split='test')
  batch = _batch()
  batch['label'] = jnp.asarray(np.random.default_rng(1).integers(0, 8, (6, 8, 8)), jnp.uint8)
  images, labels = examples.make_segmentation_examples(jax.random.key(2), batch, config, info)
  assert images.dtype == jnp.float32 and images.shape == (6, 4, 6, 3)
  assert labels.dtype == jnp.int32 and labels.shape == (6, 4, 6)
  keys = jax.vmap(functools.partial(jax.random.fold_in, jax.random.key(2)))(batch['index'])
  for i in range(6):
    raw, lab = examples.augment(keys[i], batch['image'][i], batch['label'][i], crop=(4, 6),
                                flip=True)
    np.testing.assert_array_equal(images[i], canvas.normalize(raw, info.mean, info.std))
    np.testing.assert_array_equal(labels[i], lab)
  config.data.crop_height = config.data.crop_width = 0
  assert examples.crop_size(config) is None


def test_one_normalize_for_canvases_and_segmentation():
  """uint8 -> (x / 255 - mean) / std, the segmentation formula, bit for bit."""
  pix = jnp.asarray(np.random.default_rng(0).integers(0, 256, (5, 7, 3)), jnp.uint8)
  mean, std = jnp.asarray((0.485, 0.456, 0.406), jnp.float32), jnp.asarray((0.229, 0.224, 0.225),
                                                                           jnp.float32)
  want = (pix.astype(jnp.float32) / 255.0 - mean) / std
  got = canvas.normalize(pix, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
  assert np.asarray(got).tobytes() == np.asarray(want).tobytes()


def _luma(x):
  return x @ np.array([0.2989, 0.587, 0.114], np.float32)


# torchvision's tensor formulas, written out: brightness, contrast, saturation.
_REFERENCE = (lambda x, f: np.clip(f * x, 0, 1),
              lambda x, f: np.clip(f * x + (1 - f) * _luma(x).mean(), 0, 1),
              lambda x, f: np.clip(f * x + (1 - f) * _luma(x)[..., None], 0, 1))


def test_color_adjustments_are_torchvisions():
  x = np.random.default_rng(0).uniform(0, 1, (4, 5, 3)).astype(np.float32)
  for op, want, factor in zip(examples.JITTER_OPS, _REFERENCE, (1.3, 0.6, 1.4)):
    got = np.asarray(op(jnp.asarray(x), factor))
    np.testing.assert_allclose(got, want(x, factor), atol=1e-6)
    assert np.abs(got - x).max() > 0.05
  gray = np.asarray(examples.adjust_saturation(jnp.asarray(x), 0.0))
  np.testing.assert_allclose(gray, np.repeat(_luma(x)[..., None], 3, -1), atol=1e-6)
  np.testing.assert_allclose(examples.adjust_contrast(jnp.asarray(x), 0.0),
                             np.full_like(x, _luma(x).mean()), atol=1e-6)


def test_color_jitter_draws_factors_and_an_order_per_key():
  x = np.random.default_rng(1).uniform(0, 1, (6, 7, 3)).astype(np.float32)
  orders, factors = set(), []
  for seed in range(40):
    key = jax.random.key(seed)
    f, order = map(np.asarray, examples.jitter_params(key, 0.5))
    orders.add(tuple(order.tolist()))
    factors.append(f)
    want = x
    for i in order:
      want = _REFERENCE[i](want, f[i])
    np.testing.assert_allclose(examples.color_jitter(key, jnp.asarray(x), 0.5), want, atol=1e-6)
  factors = np.stack(factors)
  assert factors.min() >= 0.5 and factors.max() <= 1.5 and abs(factors.mean() - 1) < 0.1
  assert orders == {(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)}
  # With clipping the order matters: saturation then brightness is not the reverse.
  strong = jnp.array([1.5, 1.0, 1.5])
  sat_first = examples.apply_jitter(jnp.asarray(x), strong, jnp.array([2, 0, 1]))
  bright_first = examples.apply_jitter(jnp.asarray(x), strong, jnp.array([0, 2, 1]))
  assert np.abs(np.asarray(sat_first) - np.asarray(bright_first)).max() > 1e-3


def test_segmentation_examples_are_jittered_before_normalising():
  """data.color_jitter: each example jittered by its own key (after the crop, in [0, 1]);
  0 leaves the uint8 pixels as they are."""
  config = segmentation.get_config('tiny')
  config.data.color_jitter = 0.5
  info = SegInfo(name='s', num_classes=8, class_names=tuple('abcdefgh'), image_shape=(8, 8, 3),
                 num_train=10, num_eval=10, eval_split='test')
  batch = _batch()
  batch['label'] = jnp.zeros((6, 8, 8), jnp.uint8)
  images, _ = examples.make_segmentation_examples(jax.random.key(3), batch, config, info)
  keys = jax.vmap(functools.partial(jax.random.fold_in, jax.random.key(3)))(batch['index'])
  for i in range(6):
    f, order = map(np.asarray, examples.jitter_params(jax.random.fold_in(keys[i], 3), 0.5))
    want = np.asarray(batch['image'][i], np.float32) / 255
    for j in order:
      want = _REFERENCE[j](want, f[j])
    np.testing.assert_allclose(images[i], canvas.normalize(want, info.mean, info.std), atol=1e-5)
  config.data.color_jitter = 0.0
  plain, _ = examples.make_segmentation_examples(jax.random.key(3), batch, config, info)
  np.testing.assert_array_equal(plain, canvas.normalize(batch['image'], info.mean, info.std))
  assert np.abs(np.asarray(plain) - np.asarray(images)).max() > 0.1
