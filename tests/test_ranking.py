"""Position-channel ranking: a toy model with a left-half and a right-half channel is ranked as
built; sums equal a direct numpy computation and do not depend on batching."""

import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from gpjax.core import parallel
from gpjax.probes import ranking

H, W, C = 8, 12, 6


class Toy(nn.Module):
  """Map (n, H, W, C): channel 0 = brightness on the left half only, channel 1 = on the right
  half only, channels 2.. = squared colour values (their GAP is the same for a flipped image)."""

  @nn.compact
  def __call__(self, x, *, train):
    del train
    bright = x.mean(-1, keepdims=True)
    left = (jnp.arange(W) < W // 2)[None, None, :, None]
    maps = jnp.concatenate([bright * left, bright * ~left, x ** 2, x[..., :1] ** 2], -1)
    # A parameter, so that the model has variables as real ones do.
    scale = self.param('scale', nn.initializers.ones, (C,))
    return None, {'stage4': maps * scale}


def _scenes(n=10, seed=0):
  """Brighter content on the left (a layout prior), random elsewhere."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 0.5, (n, H, W, 3)).astype(np.float32)
  x[:, :, :W // 2] += rng.uniform(0.2, 0.5, (n, 1, 1, 1)).astype(np.float32)
  return x


def _direct(x):
  def gap(images):
    b = images.mean(-1)
    return np.concatenate([b[:, :, :W // 2].sum((1, 2))[:, None] / (H * W),
                           b[:, :, W // 2:].sum((1, 2))[:, None] / (H * W),
                           (images ** 2).mean((1, 2)), (images[..., :1] ** 2).mean((1, 2))], 1)
  return gap(x) - gap(x[:, :, ::-1])


def _rank(model, variables, x, batch_size):
  """`ranking.rank` of ``model``'s stage4 over x in batches of ``batch_size`` (one device;
  the last batch zero-padded, its padding masked)."""
  mesh = parallel.make_mesh()
  fn = ranking.make_ranker(lambda v, images: model.apply(v, images, train=False)[1]['stage4'],
                           mesh)

  def batches():
    for start in range(0, len(x), batch_size):
      chunk = x[start:start + batch_size]
      mask = np.arange(batch_size) < len(chunk)
      yield {'image': np.pad(chunk, [(0, batch_size - len(chunk))] + [(0, 0)] * 3),
             'mask': mask}

  return ranking.rank(fn, variables, batches(), functools.partial(parallel.to_global, mesh))


def test_toy_left_and_right_channels_lead_their_rankings():
  x = _scenes()
  model, variables = Toy(), {'params': {'scale': jnp.ones(C)}}
  out = _rank(model, variables, x, 4)
  assert out['left'][0] == 0 and out['right'][0] == 1
  assert set(out['overall'][:2]) == {0, 1}
  d = _direct(x.astype(np.float64))
  np.testing.assert_allclose(out['mean_abs_difference'], np.abs(d).mean(0), atol=1e-6)
  np.testing.assert_allclose(out['mean_signed_difference'], d.mean(0), atol=1e-6)
  assert out['mean_signed_difference'][0] > 0.1 > -0.1 > out['mean_signed_difference'][1]
  assert max(out['mean_abs_difference'][2:]) < 1e-6  # Flip-invariant channels: no position.
  assert out['num_images'] == len(x)
  assert sorted(out['overall']) == list(range(C))  # Each ranking is a permutation.


def test_batching_and_padding_do_not_change_sums():
  x = _scenes(n=7, seed=1)
  model, variables = Toy(), {'params': {'scale': jnp.arange(1, C + 1, dtype=jnp.float32)}}
  a = _rank(model, variables, x, 3)  # 3 + 3 + 1 (2 padded).
  b = _rank(model, variables, x, 7)
  np.testing.assert_allclose(a['mean_abs_difference'], b['mean_abs_difference'], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(a['mean_signed_difference'], b['mean_signed_difference'],
                             rtol=1e-5, atol=1e-6)
  assert a['left'][:2] == b['left'][:2] and a['num_images'] == b['num_images'] == 7


def test_rankings_ties_keep_lower_index_first():
  out = ranking.rankings(np.array([1.0, 2.0, 2.0, 0.0]), np.array([0.0, -1.0, 1.0, 0.0]), 1)
  assert out['overall'] == [1, 2, 0, 3]
  assert out['left'] == [2, 0, 3, 1] and out['right'] == [1, 0, 3, 2]
