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

``run`` is the job (configs/augshift.py:invariance) on a trained workdir;
``run_study`` the AugShift study (configs/augshift_study.py), `gpjax.study` with a
sweep over ``augshift.weight`` and `evaluate_run` as its evaluator.
"""

import copy
import functools
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gpjax.data import canvas

# canvases (n, H, W, C) -> (logits (n, k), GAP latents (n, C)).
Apply = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
# Per-run scalars the study summarises (from each run's invariance/results.json).
STUDY_METRICS = ('consistency', 'readout_accuracy', 'latent_distance', 'shifted_accuracy')


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
  the train statistics (a constant channel stays 0).

  Returns:
    ``readout_accuracy`` (test), ``readout_train_accuracy``,
    ``readout_per_cell_accuracy`` (num_cells,), ``readout_chance`` = 1 / num_cells
    and ``readout_majority`` (test frequency of the most common train cell).
  """
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import StandardScaler
  scaler = StandardScaler().fit(train_latents)
  clf = LogisticRegression(C=c, max_iter=max_iter)
  clf.fit(scaler.transform(train_latents), train_cells)
  pred = clf.predict(scaler.transform(test_latents))
  test_cells = np.asarray(test_cells)
  correct = np.bincount(test_cells, weights=pred == test_cells, minlength=num_cells)
  count = np.bincount(test_cells, minlength=num_cells)
  majority = np.bincount(train_cells, minlength=num_cells).argmax()
  return {'readout_accuracy': float((pred == test_cells).mean()),
          'readout_train_accuracy': float(clf.score(scaler.transform(train_latents),
                                                    train_cells)),
          'readout_per_cell_accuracy': (correct / np.maximum(count, 1)).tolist(),
          'readout_chance': 1.0 / num_cells,
          'readout_majority': float((test_cells == majority).mean())}


# The job: python -m gpjax.main --config=configs/augshift.py:invariance --workdir=OUT \
#     --config.invariance.source_workdir=RUN


def _check_fields(v: Any, prefix: str) -> None:
  from gpjax.validate import ConfigError, _at_least
  for field in ('seed', 'num_images', 'readout_images'):
    _at_least(f'{prefix}.{field}', v[field], 0)
  for field in ('num_pairs', 'curve_points', 'batch_size'):
    _at_least(f'{prefix}.{field}', v[field], 1)
  if not v.readout_c > 0:
    raise ConfigError(f'config.{prefix}.readout_c={v.readout_c!r} must be > 0.')


def validate_config(config: Any) -> None:
  """Raises ConfigError naming the first bad ``config.invariance`` field."""
  from gpjax.validate import ConfigError
  v = config.invariance
  _check_fields(v, 'invariance')
  src = v.source_workdir
  if not src:
    raise ConfigError('config.invariance.source_workdir is empty: set it to the workdir of a '
                      'trained run (--config.invariance.source_workdir=DIR).')
  for need, what in (('config.json', 'it is not a gpjax training workdir'),
                     ('checkpoints', 'train a model there first')):
    if not os.path.exists(os.path.join(src, need)):
      raise ConfigError(f'config.invariance.source_workdir={src!r} holds no {need}: {what}.')


def run(config: Any, workdir: str) -> dict[str, Any]:
  """Measures the newest checkpoint of ``config.invariance.source_workdir``; writes
  ``results.json`` and ``invariance.png`` to ``workdir`` and returns the results."""
  import ml_collections
  from gpjax import checkpoint, writers
  from gpjax.data import input_pipeline
  from gpjax.tasks import classification
  validate_config(config)
  v = config.invariance
  src = ml_collections.ConfigDict(writers.read_json(os.path.join(v.source_workdir,
                                                                 'config.json')))
  d = src.data
  data_dir, image_size = v.data_dir or d.data_dir or None, d.image_size or None
  train_src, info = input_pipeline.load_source(d.name, 'train', data_dir=data_dir,
                                               image_size=image_size)
  test_src, _ = input_pipeline.load_source(d.name, info.eval_split, data_dir=data_dir,
                                           image_size=image_size)
  num_classes = classification.num_classes(src, info)
  model = classification.create_model(src, num_classes, axis_name=None)
  raw = checkpoint.restore_raw(v.source_workdir)
  apply = model_apply(model, {'params': raw['params'], 'batch_stats': raw['batch_stats']})
  h, w, _ = info.image_shape
  g = d.grid
  start = time.perf_counter()
  test = test_src.read(np.arange(min(v.num_images or len(test_src), len(test_src))))
  train_images = train_src.read(np.arange(min(v.readout_images or len(train_src),
                                              len(train_src))))['image']
  kw = dict(grid=g, mean=info.mean, std=info.std, background=d.background,
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
  source_results = os.path.join(v.source_workdir, 'results.json')
  results.update({
      'chance': 1.0 / num_classes, 'num_images': len(test['image']),
      'num_readout_images': len(train_images), 'checkpoint_step': int(raw['step']),
      'source_test_accuracy': (writers.read_json(source_results)['test_accuracy']
                               if os.path.isfile(source_results) else None),
      'seconds': time.perf_counter() - start, 'source_workdir': v.source_workdir,
      'source_config': src.to_dict(), 'config': config.to_dict(),
      'device_kind': jax.devices()[0].device_kind, 'jax_version': jax.__version__})
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    writers.write_json(os.path.join(workdir, 'results.json'), results)
    save_figure(os.path.join(workdir, 'invariance.png'), results,
                f'{src.task}: {src.model.backbone} {src.model.head}, padding={src.model.padding}')
    print(f'consistency {results["consistency"]:.4f}, shifted accuracy '
          f'{results["shifted_accuracy"]:.4f}, latent distance {results["latent_distance"]:.4f}, '
          f'readout {results["readout_accuracy"]:.4f} (chance {1 / g ** 2:.4f})', flush=True)
  return results


def save_figure(path: str, results: dict[str, Any], title: str) -> None:
  """Accuracy vs column offset (chance dashed) and consistency per pair vs its distance."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
  curve = results['accuracy_vs_shift']
  left.plot([o[1] for o in curve['offsets']], 100 * np.asarray(curve['accuracy']), marker='o')
  left.axhline(100 * results['chance'], color='gray', ls='--', label='chance')
  left.set_xlabel(f'column offset (px), row offset {curve["offsets"][0][0]}')
  left.set_ylabel('test accuracy (%)')
  left.set_ylim(0, 100)
  left.legend(fontsize=8)
  pairs = np.asarray(results['pairs'])
  distance = np.abs(pairs[:, 0] - pairs[:, 1]).sum(axis=1)
  right.scatter(distance, 100 * np.asarray(results['consistency_per_pair']))
  right.set_xlabel('|row shift| + |column shift| of the pair (px)')
  right.set_ylabel('consistency (%)')
  right.set_ylim(0, 102)
  right.set_title(f'consistency {100 * results["consistency"]:.1f}%, readout '
                  f'{100 * results["readout_accuracy"]:.1f}%', fontsize=9)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


# The study: python -m gpjax.main --config=configs/augshift_study.py --workdir=OUT


def evaluate_run(config: Any, name: str, run_config: Any, run_dir: str) -> dict[str, float]:
  """`gpjax.study` evaluator: `run` on a trained run (cached in ``run_dir/invariance``)."""
  from gpjax import study
  out = os.path.join(run_dir, 'invariance')
  results = study.cached(os.path.join(out, 'results.json'))
  if results is None:
    probe = copy.deepcopy(config.evaluator)
    probe.invariance.source_workdir = run_dir
    print(f'invariance of {name}', flush=True)
    results = run(probe, out)
  return {m: float(results[m]) for m in STUDY_METRICS}


def study_sweep(config: Any):
  """The AugShift study's extra grid axis: (study.sweep_field, its values)."""
  from gpjax import study
  return study.parse_sweep(config.base, config.study.sweep_field, config.study.sweep_values)


def validate_study(config: Any) -> None:
  """The grid with its sweep, and the evaluator's fields (its source is set per run)."""
  from gpjax import study
  study.validate_study(config, study_sweep(config))
  _check_fields(config.evaluator.invariance, 'evaluator.invariance')


def run_study(config: Any, workdir: str, progress: Any = None) -> dict[str, Any]:
  """`gpjax.study.run_study` over ``study.sweep_field`` with `evaluate_run`, plus
  ``accuracy_vs_shift.png`` (the curves, mean over seeds, one per sweep value)."""
  from gpjax import study, writers
  validate_study(config)
  sweep = study_sweep(config)
  summary = study.run_study(config, workdir, progress, sweep=sweep,
                            evaluate=functools.partial(evaluate_run, config))
  if 'cells' not in summary or jax.process_index() != 0:  # Preempted; or not the writer.
    return summary
  curves = {}
  for name, run_config in study.run_configs(config, sweep):
    r = writers.read_json(os.path.join(workdir, 'runs', name, 'invariance', 'results.json'))
    key = (run_config.model.head, run_config.model.padding, study.config_field(run_config, sweep[0]))
    curves.setdefault(key, []).append(r['accuracy_vs_shift'])
  save_curves(os.path.join(workdir, 'accuracy_vs_shift.png'), curves, sweep[0])
  return summary


def save_curves(path: str, curves: dict[tuple, list[dict[str, Any]]], field: str) -> None:
  """Accuracy vs column offset, mean over seeds (band = std), one line per (head, padding, value)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.4, 4))
  for (head, padding, value), runs in curves.items():
    x = [o[1] for o in runs[0]['offsets']]
    acc = 100 * np.array([r['accuracy'] for r in runs])
    line, = ax.plot(x, acc.mean(0), marker='o', ms=3, label=f'{head} {padding} {field}={value}')
    ax.fill_between(x, acc.mean(0) - acc.std(0), acc.mean(0) + acc.std(0), alpha=0.15,
                    color=line.get_color())
  ax.set_xlabel('column offset of the source on the canvas (px)')
  ax.set_ylabel('test accuracy (%)')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
