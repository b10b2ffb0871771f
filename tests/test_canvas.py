"""Location canvases: placement, backgrounds, jit/vmap, cells, flips, errors."""

import functools

import jax
import numpy as np
import pytest

from gpjax.data.canvas import make_canvas, normalize

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
_M, _S = np.array(MEAN, np.float32), np.array(STD, np.float32)


def _sources(n, h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _expected(images, cells, grid, background_pixel):
  """The canvas built by hand: background pixel value (0..1 scale) everywhere, the image in
  cell divmod(label, grid); all normalised."""
  n, h, w, _ = images.shape
  out = np.empty((n, grid * h, grid * w, 3), np.float32)
  out[:] = (background_pixel - _M) / _S
  for i, label in enumerate(cells):
    row, col = divmod(int(label), grid)
    out[i, row * h:(row + 1) * h, col * w:(col + 1) * w] = (images[i] / 255.0 - _M) / _S
  return out


@pytest.mark.parametrize('grid', [1, 2, 3, 5])
@pytest.mark.parametrize('h,w', [(4, 4), (3, 5)])
@pytest.mark.parametrize('background,pixel', [('zero', _M), ('black', 0.0), ('white', 1.0)])
def test_patch_lands_in_its_cell(grid, h, w, background, pixel):
  cells = np.arange(grid * grid)  # every cell once
  images = _sources(len(cells), h, w, seed=grid)
  canvas = np.asarray(make_canvas(images, cells, grid=grid, mean=MEAN, std=STD,
                                  background=background))
  np.testing.assert_allclose(canvas, _expected(images, cells, grid, pixel), atol=1e-5)
  if background == 'zero':  # the dataset-mean colour is exactly zero after normalisation
    assert (canvas[_background_mask(cells, grid, h, w)] == 0).all()


def _background_mask(cells, grid, h, w):
  mask = np.ones((len(cells), grid * h, grid * w), bool)
  for i, label in enumerate(cells):
    row, col = divmod(int(label), grid)
    mask[i, row * h:(row + 1) * h, col * w:(col + 1) * w] = False
  return mask


def test_background_values():
  images, cells = _sources(2, 4, 6), np.array([0, 3])
  make = functools.partial(make_canvas, images, cells, grid=2, mean=MEAN, std=STD)
  mask = _background_mask(cells, 2, 4, 6)
  black, white = make(background='black'), make(background='white')
  np.testing.assert_allclose(np.asarray(black)[mask], np.broadcast_to(-_M / _S, (mask.sum(), 3)),
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(white)[mask],
                             np.broadcast_to((1 - _M) / _S, (mask.sum(), 3)), rtol=1e-6)
  # Float sources in 0..1 are not divided by 255.
  as_float = make_canvas(images / 255.0, cells, grid=2, mean=MEAN, std=STD, background='black')
  np.testing.assert_allclose(as_float, black, atol=1e-5)


def test_noise_background():
  images, cells = _sources(4, 8, 8), np.array([0, 1, 2, 3])
  make = functools.partial(make_canvas, images, cells, grid=2, mean=MEAN, std=STD,
                           background='noise')
  a, b = np.asarray(make(rng=jax.random.key(0))), np.asarray(make(rng=jax.random.key(1)))
  mask = _background_mask(cells, 2, 8, 8)
  pixels = a[mask] * _S + _M  # back on the 0..1 scale
  assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
  assert pixels.min() < 0.02 and pixels.max() > 0.98 and abs(pixels.mean() - 0.5) < 0.03
  assert (a != b)[mask].mean() > 0.99
  np.testing.assert_array_equal(a, make(rng=jax.random.key(0)))
  # The patch itself is untouched by the noise.
  np.testing.assert_allclose(a[~mask], _expected(images, cells, 2, 0.0)[~mask], atol=1e-5)
  with pytest.raises(ValueError, match="background='noise' needs an rng"):
    make()


def test_jit_and_vmap():
  images, cells = _sources(6, 5, 3), np.array([4, 0, 8, 2, 7, 5])
  eager = make_canvas(images, cells, grid=3, mean=MEAN, std=STD)
  jitted = jax.jit(make_canvas, static_argnames=('grid', 'mean', 'std', 'background'))
  np.testing.assert_allclose(jitted(images, cells, grid=3, mean=MEAN, std=STD), eager, atol=1e-6)
  # vmap over a leading axis of (2, 3, ...) groups equals the flat batch.
  grouped = jax.vmap(lambda im, c: make_canvas(im, c, grid=3, mean=MEAN, std=STD))(
      images.reshape(2, 3, 5, 3, 3), cells.reshape(2, 3))
  np.testing.assert_allclose(np.asarray(grouped).reshape(eager.shape), eager, atol=1e-6)
  # vmap over noise keys gives independent backgrounds.
  keys = jax.random.split(jax.random.key(0), 2)
  noisy = jax.vmap(lambda k: make_canvas(images, cells, grid=3, mean=MEAN, std=STD,
                                         background='noise', rng=k))(keys)
  assert noisy.shape == (2, 6, 15, 9, 3) and np.abs(noisy[0] - noisy[1]).max() > 0.5


def test_list_of_images():
  images = _sources(3, 4, 5)
  cells = np.array([1, 2, 3])
  from_list = make_canvas(list(images), cells, grid=2, mean=MEAN, std=STD)
  np.testing.assert_allclose(from_list, make_canvas(images, cells, grid=2, mean=MEAN, std=STD),
                             atol=1e-6)
  bad = [images[0], images[1], images[2].transpose(1, 0, 2)]
  with pytest.raises(ValueError, match=r'inconsistent shapes.*\(4, 5, 3\).*\(5, 4, 3\)'):
    make_canvas(bad, cells, grid=2, mean=MEAN, std=STD)


@pytest.mark.parametrize('grid', [0, -1, 2.0, True, '3', None])
def test_bad_grid_raises(grid):
  with pytest.raises(ValueError, match=rf'grid={grid!r} must be an integer >= 1'):
    make_canvas(_sources(1, 4, 4), np.array([0]), grid=grid, mean=MEAN, std=STD)


def test_other_errors():
  with pytest.raises(ValueError, match=r"background='grey' is not supported.*'zero'.*'noise'"):
    make_canvas(_sources(1, 4, 4), np.array([0]), grid=2, mean=MEAN, std=STD, background='grey')
  with pytest.raises(ValueError, match=r'\(N, h, w, C\); got \(4, 4, 3\)'):
    make_canvas(_sources(1, 4, 4)[0], np.array([0]), grid=2, mean=MEAN, std=STD)


def test_normalize():
  pix = np.array([[0, 255, 128]], np.uint8)[..., None].repeat(3, -1)
  expected = (pix / 255.0 - _M) / _S
  np.testing.assert_allclose(normalize(pix, MEAN, STD), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(normalize(pix / 255.0, MEAN, STD), expected, rtol=1e-5, atol=1e-6)
