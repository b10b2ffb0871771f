"""Location canvases: one source image pasted into one cell of a g x g grid.

Built on the device (jit/vmap, no Python loop per sample). The label of a
location task is the cell index, row-major: ``row * g + col``. A cell is the
special case of a pixel offset (``make_canvas_at``): the source's top-left
corner at (row * h, col * w); any offset in [0, (g-1) h] x [0, (g-1) w] keeps
the source inside the canvas (AugShift's shifted pairs use them).
"""

import numbers
from typing import Sequence

import jax
import jax.numpy as jnp

BACKGROUNDS = ('zero', 'black', 'white', 'noise')
PLACEMENTS = ('cell', 'pixel')  # Where a shifted copy may go: a grid cell, or any pixel offset.


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
  images = _stack(images)
  _, h, w, _ = images.shape
  return make_canvas_at(images, cell_offsets(cells, grid, h, w), grid=grid, mean=mean, std=std,
                        background=background, rng=rng)


def _stack(images) -> jax.Array:
  if isinstance(images, (list, tuple)):
    shapes = sorted({tuple(im.shape) for im in images})
    if len(shapes) > 1:
      raise ValueError(f'images have inconsistent shapes {shapes}; all source images must '
                       'share one (h, w, C).')
    images = jnp.stack(images)
  if images.ndim != 4:
    raise ValueError(f'images must have shape (N, h, w, C); got {images.shape}.')
  return images


def cell_offsets(cells: jax.Array, grid: int, h: int, w: int) -> jax.Array:
  """Top-left pixel (row, col) of each cell (N,) of a grid of h x w cells: (N, 2) int32."""
  row, col = jnp.divmod(jnp.asarray(cells).astype(jnp.int32), grid)
  return jnp.stack([row * h, col * w], axis=-1)


def offset_range(grid: int, h: int, w: int) -> tuple[int, int]:
  """Largest (row, col) offset that keeps an h x w source inside the g*h x g*w canvas."""
  return (check_grid(grid) - 1) * h, (grid - 1) * w


def make_canvas_at(images: jax.Array, offsets: jax.Array, *, grid: int, mean: Sequence[float],
                   std: Sequence[float], background: str = 'zero',
                   rng: jax.Array | None = None) -> jax.Array:
  """Pastes each image with its top-left corner at a pixel offset of a background canvas.

  Args:
    images: source images (N, h, w, C), as in ``make_canvas``.
    offsets: (N, 2) int (row, col) of each image's top-left pixel, each in
      [0, (g-1) h] x [0, (g-1) w] (see ``offset_range``); XLA clamps values
      outside it, so the image stays whole at the border.
    grid: g; the canvas is (g*h, g*w).
    mean, std, background, rng: as in ``make_canvas``.

  Returns:
    Normalised canvases (N, g*h, g*w, C) float32.
  """
  check_grid(grid)
  images = _stack(images)
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
  offsets = jnp.asarray(offsets).astype(jnp.int32)

  def paste(canvas, image, offset):
    return jax.lax.dynamic_update_slice(canvas, image, (offset[0], offset[1], 0))

  return jax.vmap(paste)(canvas, normalize(images, mean, std), offsets)


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


def random_offsets(rng: jax.Array, grid: int, h: int, w: int, *, placement: str = 'pixel',
                   around: jax.Array | None = None, max_shift: int = 0) -> jax.Array:
  """One random offset (2,) int32 of an h x w source on the g x g canvas.

  Args:
    rng: key.
    grid, h, w: the canvas (g*h, g*w) and source size.
    placement: 'cell' (a uniformly random cell's corner) or 'pixel' (uniform
      over every offset that keeps the source inside the canvas).
    around: with 'pixel' and ``max_shift`` > 0, an offset (2,) to stay near.
    max_shift: if > 0, the offset is uniform over the pixels at most
      ``max_shift`` from ``around`` per axis (clipped to the canvas).
  """
  if placement not in PLACEMENTS:
    raise ValueError(f'placement={placement!r} is not supported; choose one of {PLACEMENTS}.')
  if placement == 'cell':
    cell = jax.random.randint(rng, (), 0, check_grid(grid) ** 2, dtype=jnp.int32)
    return cell_offsets(cell, grid, h, w)
  high = jnp.array(offset_range(grid, h, w), jnp.int32)
  low = jnp.zeros(2, jnp.int32)
  if max_shift > 0 and around is not None:
    low, high = jnp.maximum(low, around - max_shift), jnp.minimum(high, around + max_shift)
  return jax.random.randint(rng, (2,), low, high + 1, dtype=jnp.int32)


def shifted_pair_batch(keys: jax.Array, images: jax.Array, *, grid: int, mean: Sequence[float],
                       std: Sequence[float], background: str = 'zero', flip: bool = False,
                       placement: str = 'pixel',
                       max_shift: int = 0) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Two canvases per source, the same (flipped) image at two random offsets (AugShift).

  The copies differ only in where the source sits: one flip and one noise
  background per example. Each example's draws come from its own key alone,
  as in ``canvas_batch``.

  Args:
    keys: one PRNG key per example (N,).
    images: source images (N, h, w, C).
    grid, mean, std, background, flip: as in ``canvas_batch``.
    placement: 'pixel' (offsets anywhere the source fits) or 'cell' (two
      independent random cells, possibly the same).
    max_shift: 'pixel' only: if > 0 the second offset lies within this many
      pixels of the first per axis; 0 = the two offsets are independent.

  Returns:
    canvases_a, canvases_b (N, g*h, g*w, C) float32 and their offsets
    offsets_a, offsets_b (N, 2) int32.
  """
  check_grid(grid)
  _, h, w, _ = images.shape

  def one(key, image):
    k_a, k_b, k_flip, k_noise = jax.random.split(key, 4)
    if flip:
      image = jnp.where(jax.random.bernoulli(k_flip), image[:, ::-1], image)
    a = random_offsets(k_a, grid, h, w, placement=placement)
    b = random_offsets(k_b, grid, h, w, placement=placement, around=a, max_shift=max_shift)
    # The same noise key for both copies: one background, only the position differs.
    canvas_a, canvas_b = (make_canvas_at(image[None], o[None], grid=grid, mean=mean, std=std,
                                         background=background, rng=k_noise)[0] for o in (a, b))
    return canvas_a, canvas_b, a, b

  return jax.vmap(one)(keys, images)
