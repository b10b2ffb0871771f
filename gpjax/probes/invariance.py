r"""Shift invariance of a trained classifier: AugShift's four measures.

Test sources are pasted at pixel offsets of the g x g canvas
(``canvas.make_canvas_at``; offsets in [0, (g-1) h] x [0, (g-1) w]):

- consistency (Zhang 2019): the fraction of (image, pair) with the same top-1
  class at both offsets of a pair, over K FIXED offset pairs drawn from
  ``seed`` (`shift_pairs`), the same K pairs for every image; results store
  them (``pairs``) and the per-pair values;
- accuracy vs shift: test accuracy with every image at column offset x,
  x evenly spaced over 0..(g-1) w, row offset (g-1) h / 2 (vertically centred);
- latent distance: mean over pairs, images and channels of (z_a - z_b)^2, z the
  GAP latent (``features['pooled']``), divided by the latent's mean per-channel
  variance over all test images and offsets used: 0 = the same latent at both
  offsets, about 2 = as far apart as the latents of two unrelated images;
- location readout: a multinomial logistic regression (scikit-learn, L2,
  standardised inputs) fit on the frozen GAP latents of train canvases with the
  source in a random cell (label = cell) and scored on test canvases built the
  same way; chance is 1 / g^2: lower = less position readable from the latent.

`evaluate` measures a loaded run (`gpjax.tasks.runs.load_run`); `PROBE` is the job
(configs/augshift.py:invariance) on a trained workdir, which the AugShift study
(`gpjax.studies.augshift`) runs on every run.
"""

import functools
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gpjax.checks import at_least
from gpjax.core import figures
from gpjax.data import canvas, input_pipeline
from gpjax.errors import ConfigError
from gpjax.probes import runner
from gpjax.tasks import runs

# canvases (n, H, W, C) -> (logits (n, k), GAP latents (n, C)).
Apply = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def model_apply(model: Any, variables: dict[str, Any]) -> Apply:
  """The eval-mode forward of a `Classifier` as an `Apply` (one jitted function)."""
  @jax.jit
  def forward(variables, canvases):
    logits, feats = model.apply(variables, canvases, train=False)
    return logits, feats['pooled']

  return functools.partial(forward, variables)


def shift_pairs(seed: int, num_pairs: int, grid: int, h: int, w: int) -> np.ndarray:
  """K offset pairs, int32 (K, 2, 2): ``pairs[k] = ((row_a, col_a), (row_b, col_b))``,
  each offset uniform over the canvas (``default_rng(seed)``), a and b independent."""
  high = np.array(canvas.offset_range(grid, h, w)) + 1
  return np.random.default_rng(seed).integers(0, high, size=(num_pairs, 2, 2)).astype(np.int32)


def curve_offsets(num_points: int, grid: int, h: int, w: int) -> np.ndarray:
  """int32 (P, 2): column offsets evenly from 0 to (g-1) w, row offset (g-1) h // 2."""
  max_row, max_col = canvas.offset_range(grid, h, w)
  cols = np.round(np.linspace(0, max_col, num_points)).astype(np.int32)
  return np.stack([np.full_like(cols, max_row // 2), cols], axis=-1)


@functools.partial(jax.jit, static_argnames=('grid', 'mean', 'std', 'background'))
def _canvases(images, indices, offsets, key, *, grid, mean, std, background):
  """Image i at offsets[i]; a 'noise' background keyed by the image's index alone."""
  def one(index, image, offset):
    return canvas.make_canvas_at(image[None], offset[None], grid=grid, mean=mean, std=std,
                                 background=background, rng=jax.random.fold_in(key, index))[0]
  return jax.vmap(one)(indices, images, offsets)


def latents_at(apply: Apply, images: np.ndarray, offsets: np.ndarray, *, grid: int,
               mean: Sequence[float], std: Sequence[float], background: str = 'zero',
               seed: int = 0, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """Logits (N, k) and GAP latents (N, C) of each source image (N, h, w, C) at its
  offset (N, 2) or at one offset (2,) for all; ``batch_size`` canvases per call."""
  images = np.asarray(images)
  n = len(images)
  offsets = np.broadcast_to(np.asarray(offsets, np.int32), (n, 2))
  size = max(1, min(batch_size, n))
  key = jax.random.key(seed)
  logits, latents = [], []
  for start in range(0, n, size):
    stop = min(start + size, n)
    pad = size - (stop - start)  # One shape for every call: one compile.
    rows = np.r_[np.arange(start, stop), np.full(pad, stop - 1)]
    x = _canvases(images[rows], jnp.asarray(rows, jnp.int32), offsets[rows], key, grid=grid,
                  mean=tuple(mean), std=tuple(std), background=background)
    out = jax.device_get(apply(x))
    logits.append(out[0][:stop - start])
    latents.append(out[1][:stop - start])
  return np.concatenate(logits), np.concatenate(latents)


def shift_measures(apply: Apply, images: np.ndarray, labels: np.ndarray, pairs: np.ndarray,
                   curve: np.ndarray, *, grid: int, mean: Sequence[float], std: Sequence[float],
                   background: str = 'zero', seed: int = 0,
                   batch_size: int = 256) -> dict[str, Any]:
  """Consistency, latent distance and accuracy vs shift of one model.

  Args:
    apply: the model (see `model_apply`).
    images: test sources (N, h, w, C); labels: their classes (N,).
    pairs: (K, 2, 2) offset pairs (`shift_pairs`); curve: (P, 2) offsets of
      the accuracy curve (`curve_offsets`).
    grid, mean, std, background: the canvas; seed: keys a 'noise' background
      (one per image, the same at every offset).
    batch_size: canvases per forward pass.

  Returns:
    ``consistency`` (mean of ``consistency_per_pair`` (K,)), ``pairs``,
    ``latent_mse`` (raw), ``latent_variance``, ``latent_distance`` (their
    ratio; 0 when the latent is constant), ``latent_distance_per_pair``,
    ``accuracy_vs_shift`` {``offsets``, ``accuracy``} and ``shifted_accuracy``
    (the curve's mean).
  """
  pairs, curve = np.asarray(pairs, np.int32), np.asarray(curve, np.int32)
  offsets, inverse = np.unique(np.concatenate([pairs.reshape(-1, 2), curve]), axis=0,
                               return_inverse=True)
  inverse = inverse.reshape(-1)
  outs = [latents_at(apply, images, o, grid=grid, mean=mean, std=std, background=background,
                     seed=seed, batch_size=batch_size) for o in offsets]
  preds = np.stack([np.argmax(lo, -1) for lo, _ in outs])  # (U, N)
  z = np.stack([la for _, la in outs])  # (U, N, C)
  a, b = inverse[:2 * len(pairs)].reshape(-1, 2).T
  per_pair = (preds[a] == preds[b]).mean(axis=1)
  mse = np.array([np.mean(np.square(z[i] - z[j], dtype=np.float64)) for i, j in zip(a, b)])
  variance = float(z.reshape(-1, z.shape[-1]).var(axis=0, dtype=np.float64).mean())
  scale = variance if variance > 1e-12 else np.inf  # A constant latent: distance 0.
  accuracy = (preds[inverse[2 * len(pairs):]] == np.asarray(labels)[None]).mean(axis=1)
  return {'consistency': float(per_pair.mean()), 'consistency_per_pair': per_pair.tolist(),
          'pairs': pairs.tolist(), 'latent_mse': float(mse.mean()),
          'latent_variance': variance, 'latent_distance': float(mse.mean() / scale),
          'latent_distance_per_pair': (mse / scale).tolist(),
          'accuracy_vs_shift': {'offsets': curve.tolist(), 'accuracy': accuracy.tolist()},
          'shifted_accuracy': float(accuracy.mean())}


def random_cells(seed: int, num: int, grid: int) -> np.ndarray:
  """Cells (num,) int32 uniform over the g*g grid, from ``default_rng(seed)``."""
  return np.random.default_rng(seed).integers(0, grid * grid, num).astype(np.int32)


def location_readout(train_latents: np.ndarray, train_cells: np.ndarray,
                     test_latents: np.ndarray, test_cells: np.ndarray, *, num_cells: int,
                     c: float = 1.0, max_iter: int = 2000) -> dict[str, Any]:
  """Linear readout of the cell from frozen latents (N, C).

  A multinomial ``LogisticRegression(C=c)`` (lbfgs) on latents standardised with
  the train statistics (a constant channel stays 0), fit with one BLAS/OpenMP thread.

  Returns:
    ``readout_accuracy`` (test), ``readout_train_accuracy``,
    ``readout_per_cell_accuracy`` (num_cells,), ``readout_chance`` = 1 / num_cells
    and ``readout_majority`` (test frequency of the most common train cell).
  """
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import StandardScaler
  from threadpoolctl import threadpool_limits
  # The fit's matrix products round differently with 1 and 2 BLAS threads, and lbfgs
  # stops at a tolerance: on the quick suite's latents the two fits' logits differed
  # by up to 1.2, enough to move test predictions. One thread: the same fit on every
  # machine, 0.3 s for the quick suite's readout (two threads: 12 s on a loaded 2-core box).
  with threadpool_limits(limits=1):
    scaler = StandardScaler().fit(train_latents)
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit(scaler.transform(train_latents), train_cells)
    pred = clf.predict(scaler.transform(test_latents))
    train_accuracy = float(clf.score(scaler.transform(train_latents), train_cells))
  test_cells = np.asarray(test_cells)
  correct = np.bincount(test_cells, weights=pred == test_cells, minlength=num_cells)
  count = np.bincount(test_cells, minlength=num_cells)
  majority = np.bincount(train_cells, minlength=num_cells).argmax()
  return {'readout_accuracy': float((pred == test_cells).mean()),
          'readout_train_accuracy': train_accuracy,
          'readout_per_cell_accuracy': (correct / np.maximum(count, 1)).tolist(),
          'readout_chance': 1.0 / num_cells,
          'readout_majority': float((test_cells == majority).mean())}


# The job: python -m gpjax.main --config=configs/augshift.py:invariance --workdir=OUT \
#     --config.invariance.source_workdir=RUN


def check_fields(v: Any, prefix: str) -> None:
  """Raises ConfigError for a bad field of an ``invariance`` section at ``config.<prefix>``."""
  for field in ('seed', 'num_images', 'readout_images', 'source_step'):
    at_least(f'{prefix}.{field}', v[field], 0)
  for field in ('num_pairs', 'curve_points', 'batch_size'):
    at_least(f'{prefix}.{field}', v[field], 1)
  if not v.readout_c > 0:
    raise ConfigError(f'config.{prefix}.readout_c={v.readout_c!r} must be > 0.')


def check(config: Any) -> None:
  """Raises ConfigError naming the first bad ``config.invariance`` field."""
  v = config.invariance
  check_fields(v, 'invariance')
  src = v.source_workdir
  if not src:
    raise ConfigError('config.invariance.source_workdir is empty: set it to the workdir of a '
                      'trained run (--config.invariance.source_workdir=DIR).')
  for need, what in (('config.json', 'it is not a gpjax training workdir'),
                     ('checkpoints', 'train a model there first')):
    if not os.path.exists(os.path.join(src, need)):
      raise ConfigError(f'config.invariance.source_workdir={src!r} holds no {need}: {what}.')


def load(config: Any) -> runs.Run:
  """The run ``config.invariance.source_workdir`` at ``source_step`` (0: the newest)."""
  v = config.invariance
  return runs.load_run(v.source_workdir, data_dir=v.data_dir, step=v.source_step)


def evaluate(config: Any, run: runs.Run) -> dict[str, Any]:
  """`shift_measures` and `location_readout` of a loaded run with ``config.invariance``'s
  sizes, on its data set's test and train images."""
  source, model, variables, info = run.config, run.model, run.variables, run.info
  v, d = config.invariance, source.data
  image_size = d.image_size or None
  train_src, _ = input_pipeline.load_source(d.name, 'train', data_dir=info.data_dir,
                                            image_size=image_size)
  test_src, _ = input_pipeline.load_source(d.name, info.data.eval_split, data_dir=info.data_dir,
                                           image_size=image_size)
  apply = model_apply(model, variables)
  h, w, _ = info.data.image_shape
  g = d.grid
  test = test_src.read(np.arange(min(v.num_images or len(test_src), len(test_src))))
  train_images = train_src.read(np.arange(min(v.readout_images or len(train_src),
                                              len(train_src))))['image']
  kw = dict(grid=g, mean=info.data.mean, std=info.data.std, background=d.background,
            batch_size=v.batch_size)
  pairs, curve = shift_pairs(v.seed, v.num_pairs, g, h, w), curve_offsets(v.curve_points, g, h, w)
  results = shift_measures(apply, test['image'], test['label'], pairs, curve, seed=v.seed, **kw)
  train_cells = random_cells(v.seed + 1, len(train_images), g)
  test_cells = random_cells(v.seed + 2, len(test['image']), g)
  _, z_train = latents_at(apply, train_images, canvas.cell_offsets(train_cells, g, h, w),
                          seed=v.seed + 1, **kw)
  _, z_test = latents_at(apply, test['image'], canvas.cell_offsets(test_cells, g, h, w),
                         seed=v.seed + 2, **kw)
  results.update(location_readout(z_train, train_cells, z_test, test_cells, num_cells=g * g,
                                  c=v.readout_c))
  results.update({'chance': 1.0 / info.num_classes, 'num_images': len(test['image']),
                  'num_readout_images': len(train_images)})
  return results


def report(config: Any, workdir: str, run: runs.Run, results: dict[str, Any]) -> None:
  """invariance.png: the latent distance and accuracy against the shift; one printed line."""
  source = run.config
  m = source.model
  figures.save_invariance(os.path.join(workdir, 'invariance.png'), results,
                          f'{source.task}: {m.backbone} {m.head}, padding={m.padding}')
  print(f'consistency {results["consistency"]:.4f}, shifted accuracy '
        f'{results["shifted_accuracy"]:.4f}, latent distance {results["latent_distance"]:.4f}, '
        f'readout {results["readout_accuracy"]:.4f} (chance {1 / source.data.grid ** 2:.4f})',
        flush=True)


PROBE = runner.Probe(check=check, load=load, evaluate=evaluate, report=report)
JOBS = {'invariance': runner.job(PROBE, "a run's shift invariance and linear location "
                                        'readout (AugShift)')}
