"""Streaming semantic-segmentation metrics: confusion matrices, mIoU, image regions.

A confusion matrix ``conf[t, p]`` counts pixels of true class t predicted as p;
pixels labelled ``IGNORE_LABEL`` (255) or outside the evaluated region are not
counted. Matrices of batches (and devices) add up, so mIoU over a data set is
exact, as the official code's ``StreamSegMetrics``: IoU_c = conf[c, c] / (row c +
column c - conf[c, c]), averaged over the classes whose union is non-zero.

Regions (the paper's region-specific attack) are column ranges of a W-wide
image: left [0, W/2), right [W/2, W), center [W/4, 3W/4) (floors); on 2048-px
Cityscapes images the official 0..1023, 1024..2047 and 512..1535.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

IGNORE_LABEL = 255
REGIONS = ('whole', 'left', 'center', 'right')
# Each region as a union of the four column quarters [0, W/4), [W/4, W/2), ...
_REGION_QUARTERS = {'whole': (0, 1, 2, 3), 'left': (0, 1), 'center': (1, 2), 'right': (2, 3)}


def region_bounds(width: int) -> dict[str, tuple[int, int]]:
  """Columns [start, stop) of each of `REGIONS` on a ``width``-pixel image."""
  q1, half, q3 = width // 4, width // 2, (3 * width) // 4
  return {'whole': (0, width), 'left': (0, half), 'center': (q1, q3), 'right': (half, width)}


def _quarter_of_column(width: int) -> np.ndarray:
  """int (W,): which of the four quarters (cut at W//4, W//2, 3W//4) holds each column."""
  cuts = np.array([width // 4, width // 2, (3 * width) // 4])
  return np.searchsorted(cuts, np.arange(width), side='right').astype(np.int32)


def confusion_matrix(labels: jax.Array, preds: jax.Array, num_classes: int,
                     weights: jax.Array | None = None) -> jax.Array:
  """Confusion matrix of one batch (jittable).

  Args:
    labels: int (..., H, W) true classes; `IGNORE_LABEL` (or any value outside
      0..num_classes-1) is not counted.
    preds: int (..., H, W) predicted classes in 0..num_classes-1.
    num_classes: K.
    weights: optional (..., H, W) 0/1 to count only some pixels (e.g. padding
      rows of a batch get 0).

  Returns:
    int32 (K, K), rows true class, columns predicted class.
  """
  labels, preds = labels.astype(jnp.int32), preds.astype(jnp.int32)
  valid = (labels >= 0) & (labels < num_classes)
  if weights is not None:
    valid = valid & (weights > 0)
  index = jnp.where(valid, labels * num_classes + preds, num_classes * num_classes)
  # One extra bin collects the uncounted pixels, then is dropped.
  counts = jnp.bincount(index.reshape(-1), length=num_classes * num_classes + 1)
  return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


def region_confusion(labels: jax.Array, preds: jax.Array, num_classes: int,
                     weights: jax.Array | None = None) -> jax.Array:
  """Confusion matrices of `REGIONS` at once (jittable), from one scatter.

  Args:
    labels, preds, weights: as `confusion_matrix`, shape (N, H, W).
    num_classes: K.

  Returns:
    int32 (len(REGIONS), K, K), in the order of `REGIONS`.
  """
  n, h, w = labels.shape
  quarter = jnp.asarray(_quarter_of_column(w))
  k2 = num_classes * num_classes
  labels, preds = labels.astype(jnp.int32), preds.astype(jnp.int32)
  valid = (labels >= 0) & (labels < num_classes)
  if weights is not None:
    valid = valid & (weights > 0)
  index = quarter[None, None, :] * k2 + labels * num_classes + preds
  index = jnp.where(valid, index, 4 * k2)
  quarters = jnp.bincount(index.reshape(-1), length=4 * k2 + 1)[:-1].reshape(4, num_classes,
                                                                               num_classes)
  return jnp.stack([sum(quarters[q] for q in _REGION_QUARTERS[r]) for r in REGIONS]).astype(
      jnp.int32)


def iou_per_class(conf: Any) -> np.ndarray:
  """float64 (K,) IoU per class; NaN where the class is in neither labels nor preds."""
  conf = np.asarray(conf, np.float64)
  tp = np.diag(conf)
  union = conf.sum(0) + conf.sum(1) - tp
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(conf: Any) -> float:
  """Mean IoU over classes with a non-zero union (NaN if none)."""
  iou = iou_per_class(conf)
  return float(np.nanmean(iou)) if np.isfinite(iou).any() else float('nan')


def pixel_accuracy(conf: Any) -> float:
  conf = np.asarray(conf, np.float64)
  return float(np.trace(conf) / max(conf.sum(), 1.0))


def summarize(conf: Any, class_names: tuple[str, ...] | None = None) -> dict[str, Any]:
  """mIoU, pixel accuracy and per-class IoU (None where undefined) of a confusion matrix."""
  iou = iou_per_class(conf)
  names = class_names or tuple(str(i) for i in range(len(iou)))
  return {'miou': mean_iou(conf), 'pixel_accuracy': pixel_accuracy(conf),
          'iou_per_class': {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)}}
