"""Location canvases: one source image pasted into one cell of a g x g grid.

Built on the device (jit/vmap, no Python loop per sample). The label of a
location task is the cell index, row-major: ``row * g + col``.
"""

import numbers
from typing import Sequence

import jax
import jax.numpy as jnp

BACKGROUNDS = ('zero', 'black', 'white', 'noise')


def check_grid(grid: int) -> int:
  if not isinstance(grid, numbers.Integral) or isinstance(grid, bool) or grid < 1:
    raise ValueError(f'grid={grid!r} must be an integer >= 1 (cells per side).')
  return grid


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """uint8 (or 0..1 float) images (..., C) -> per-channel standardised float32."""
  x = images.astype(jnp.float32)
  if jnp.issubdtype(images.dtype, jnp.integer):
    x = x / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def random_cells(rng: jax.Array, batch: int, grid: int) -> jax.Array:
  """Cells drawn uniformly from the g*g grid, (batch,) int32."""
  return jax.random.randint(rng, (batch,), 0, check_grid(grid) ** 2, dtype=jnp.int32)


def make_canvas(images: jax.Array, cells: jax.Array, *, grid: int, mean: Sequence[float],
                std: Sequence[float], background: str = 'zero',
                rng: jax.Array | None = None) -> jax.Array:
  """Pastes each image into its cell of a background canvas.

  Args:
    images: source images (N, h, w, C), uint8 or float in 0..1 (or a list of
      N arrays (h, w, C) of one shape).
    cells: cell index of each image (N,), row-major in 0..g*g-1.
    grid: g, cells per side.
    mean, std: per-channel normalisation (C,) on the 0..1 scale.
    background: 'zero' (zeros after normalisation, the dataset-mean colour of
      the official code), 'black' (pixel 0), 'white' (pixel 1) or 'noise'
      (uniform pixels, needs ``rng``).
    rng: key for the 'noise' background.

  Returns:
    Normalised canvases (N, g*h, g*w, C) float32.
  """
  check_grid(grid)
  if isinstance(images, (list, tuple)):
    shapes = sorted({tuple(im.shape) for im in images})
    if len(shapes) > 1:
      raise ValueError(f'images have inconsistent shapes {shapes}; all source images must '
                       'share one (h, w, C).')
    images = jnp.stack(images)
  if images.ndim != 4:
    raise ValueError(f'images must have shape (N, h, w, C); got {images.shape}.')
  if background not in BACKGROUNDS:
    raise ValueError(f'background={background!r} is not supported; choose one of {BACKGROUNDS}.')
  n, h, w, c = images.shape
  shape = (n, grid * h, grid * w, c)
  if background == 'zero':
    canvas = jnp.zeros(shape, jnp.float32)
  elif background == 'noise':
    if rng is None:
      raise ValueError("background='noise' needs an rng key.")
    canvas = normalize(jax.random.uniform(rng, shape), mean, std)
  else:
    canvas = normalize(jnp.full(shape, 1.0 if background == 'white' else 0.0), mean, std)
  row, col = jnp.divmod(cells.astype(jnp.int32), grid)

  def paste(canvas, image, r, c):
    return jax.lax.dynamic_update_slice(canvas, image, (r * h, c * w, 0))

  return jax.vmap(paste)(canvas, normalize(images, mean, std), row, col)


def random_flip(rng: jax.Array, images: jax.Array) -> jax.Array:
  """Flips each image (N, h, w, C) horizontally with probability 1/2."""
  flip = jax.random.bernoulli(rng, 0.5, (images.shape[0], 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1], images)


def canvas_batch(keys: jax.Array, images: jax.Array, *, grid: int, mean: Sequence[float],
                 std: Sequence[float], background: str = 'zero',
                 flip: bool = False) -> tuple[jax.Array, jax.Array]:
  """Canvases whose randomness comes from one key per example.

  Each example's cell, flip and noise are drawn from its own key alone, so a
  canvas does not depend on the batch it is in or how that batch is split
  over devices.

  Args:
    keys: one PRNG key per example (N,).
    images: source images (N, h, w, C).
    grid, mean, std, background: as in ``make_canvas``.
    flip: flip each source horizontally with probability 1/2 first.

  Returns:
    canvases (N, g*h, g*w, C) float32 and cells (N,) int32.
  """
  check_grid(grid)

  def one(key, image):
    k_cell, k_flip, k_noise = jax.random.split(key, 3)
    cell = jax.random.randint(k_cell, (1,), 0, grid * grid, dtype=jnp.int32)
    if flip:
      image = jnp.where(jax.random.bernoulli(k_flip), image[:, ::-1], image)
    out = make_canvas(image[None], cell, grid=grid, mean=mean, std=std, background=background,
                      rng=k_noise)
    return out[0], cell[0]

  return jax.vmap(one)(keys, images)
