"""Example construction on the device: canvases, shifted pairs, test canvases, segmentation
crops, colour jitter and flips.

Every random choice of an example is drawn from a key folded with the
example's global index (``batch['index']``), so no example depends on how a
batch is split over devices and hosts.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from gpjax.data import canvas, input_pipeline

if TYPE_CHECKING:  # Annotations only: gpjax.data.segmentation loads tensorflow-datasets.
  from gpjax.data import segmentation

Batch = dict[str, jax.Array]


def _example_keys(key: jax.Array, batch: Batch) -> jax.Array:
  return jax.vmap(functools.partial(jax.random.fold_in, key))(batch['index'])


def make_examples(key: jax.Array, batch: Batch, config: ml_collections.ConfigDict,
                  info: input_pipeline.DatasetInfo, *, flip: bool) -> tuple[jax.Array, ...]:
  """Canvases (B, gh, gw, C), labels (B,) and cells (B,) of this device's shard."""
  d = config.data
  images, cells = canvas.canvas_batch(_example_keys(key, batch), batch['image'], grid=d.grid,
                                      mean=info.mean, std=info.std, background=d.background,
                                      flip=flip)
  labels = cells if config.task == 'location' else batch['label']
  return images, labels, cells


def eval_examples(batch: Batch, config: ml_collections.ConfigDict,
                  info: input_pipeline.DatasetInfo) -> tuple[jax.Array, ...]:
  """`make_examples` of the test canvases: fixed by ``config.eval.seed`` and the example
  index, unflipped, so every evaluation sees the same canvases."""
  return make_examples(jax.random.key(config.eval.seed), batch, config, info, flip=False)


def make_shifted_pairs(key: jax.Array, batch: Batch, config: ml_collections.ConfigDict,
                       info: input_pipeline.DatasetInfo, *,
                       flip: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
  """AugShift's two canvases of each example, (B, gh, gw, C) each, and the labels (B,):
  keyed by the global index as in `make_examples`; only the source's position differs."""
  d, a = config.data, config.augshift
  images_a, images_b, _, _ = canvas.shifted_pair_batch(
      _example_keys(key, batch), batch['image'], grid=d.grid, mean=info.mean, std=info.std,
      background=d.background, flip=flip, placement=a.placement, max_shift=a.max_shift)
  return images_a, images_b, batch['label']


# torchvision's rgb_to_grayscale (ITU-R 601-2 luma).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def grayscale(image: jax.Array) -> jax.Array:
  """Luma (..., h, w, 1) of RGB images (..., h, w, 3)."""
  return jnp.sum(image * jnp.asarray(GRAY_WEIGHTS, image.dtype), -1, keepdims=True)


def _blend(image: jax.Array, other: jax.Array, factor: jax.Array) -> jax.Array:
  return jnp.clip(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def adjust_brightness(image: jax.Array, factor: jax.Array) -> jax.Array:
  """torchvision's adjust_brightness of an image (h, w, 3) in [0, 1]: factor x image, clipped."""
  return _blend(image, jnp.zeros_like(image), factor)


def adjust_contrast(image: jax.Array, factor: jax.Array) -> jax.Array:
  """torchvision's adjust_contrast: a blend with the mean of the image's luma, clipped."""
  return _blend(image, jnp.mean(grayscale(image)), factor)


def adjust_saturation(image: jax.Array, factor: jax.Array) -> jax.Array:
  """torchvision's adjust_saturation: a blend with the image's luma per pixel, clipped."""
  return _blend(image, grayscale(image), factor)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation)


def jitter_params(key: jax.Array, strength: float) -> tuple[jax.Array, jax.Array]:
  """ColorJitter's random choices: factors (3,) for brightness, contrast and saturation, each
  uniform in [max(0, 1 - strength), 1 + strength], and the order (3,) to apply them in."""
  factors = jax.random.uniform(jax.random.fold_in(key, 0), (3,), minval=max(0.0, 1 - strength),
                               maxval=1 + strength)
  return factors, jax.random.permutation(jax.random.fold_in(key, 1), 3)


def apply_jitter(image: jax.Array, factors: jax.Array, order: jax.Array) -> jax.Array:
  """``JITTER_OPS[order[i]]`` with ``factors[order[i]]``, for i = 0, 1, 2, on an image
  (h, w, 3) in [0, 1]."""
  for i in range(3):
    image = lax.switch(order[i], JITTER_OPS, image, factors[order[i]])
  return image


def color_jitter(key: jax.Array, image: jax.Array, strength: float) -> jax.Array:
  """torchvision's ColorJitter(brightness=strength, contrast=strength, saturation=strength)
  of one image (h, w, 3) float in [0, 1]: the three adjustments in a random order, each
  with its own random factor (the official Cityscapes training uses strength 0.5)."""
  return apply_jitter(image, *jitter_params(key, strength))


def augment(key: jax.Array, image: jax.Array, label: jax.Array, *, crop: tuple[int, int] | None,
            flip: bool, jitter: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Random crop (h, w), colour jitter of that crop (strength ``jitter``; 0 = none) and
  horizontal flip of one example (H, W, 3) / (H, W), in the official order. Jittered images
  come back as float in [0, 1], the others as given."""
  if crop is not None:
    (h, w), (H, W) = crop, label.shape
    top = jax.random.randint(jax.random.fold_in(key, 0), (), 0, H - h + 1)
    left = jax.random.randint(jax.random.fold_in(key, 1), (), 0, W - w + 1)
    image = lax.dynamic_slice(image, (top, left, 0), (h, w, 3))
    label = lax.dynamic_slice(label, (top, left), (h, w))
  if jitter:
    x = image.astype(jnp.float32)
    if jnp.issubdtype(image.dtype, jnp.integer):
      x = x / 255.0
    image = color_jitter(jax.random.fold_in(key, 3), x, jitter)
  if flip:
    do = jax.random.bernoulli(jax.random.fold_in(key, 2))
    image, label = jnp.where(do, image[:, ::-1], image), jnp.where(do, label[:, ::-1], label)
  return image, label


def crop_size(config: ml_collections.ConfigDict) -> tuple[int, int] | None:
  """The training crop (h, w) of a segmentation config, or None for whole examples."""
  d = config.data
  return (d.crop_height, d.crop_width) if d.crop_height and d.crop_width else None


def make_segmentation_examples(key: jax.Array, batch: Batch, config: ml_collections.ConfigDict,
                               info: segmentation.SegInfo) -> tuple[jax.Array, jax.Array]:
  """Normalised crops (B, h, w, 3) float32 and their labels (B, h, w) int32 of this
  device's shard, each example cropped, colour-jittered and flipped by its own key."""
  d = config.data
  images, labels = jax.vmap(functools.partial(augment, crop=crop_size(config), flip=d.flip,
                                              jitter=d.color_jitter))(
      _example_keys(key, batch), batch['image'], batch['label'])
  return canvas.normalize(images, info.mean, info.std), labels.astype(jnp.int32)
