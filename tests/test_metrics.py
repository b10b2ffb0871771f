"""Streaming mIoU: confusion matrices against scikit-learn, the official IoU formula, exact
regions."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion

from gpjax.core import metrics

K = 5


def _data(shape, seed=0, ignore_fraction=0.2):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, K, shape)
  labels[rng.random(shape) < ignore_fraction] = 255
  preds = np.where(rng.random(shape) < 0.6, np.minimum(labels, K - 1), rng.integers(0, K, shape))
  return labels.astype(np.uint8), preds.astype(np.int32)


def _sk(labels, preds):
  keep = labels.reshape(-1) != 255
  return sk_confusion(labels.reshape(-1)[keep], preds.reshape(-1)[keep], labels=range(K))


def test_confusion_matches_sklearn_and_streams():
  labels, preds = _data((6, 9, 14))
  total = sum(np.asarray(metrics.confusion_matrix(labels[i:i + 2], preds[i:i + 2], K))
              for i in range(0, 6, 2))
  np.testing.assert_array_equal(total, _sk(labels, preds))
  weights = np.zeros((6, 9, 14))
  weights[:4] = 1  # Padding rows 4, 5 are not counted.
  np.testing.assert_array_equal(metrics.confusion_matrix(labels, preds, K, weights=weights),
                                _sk(labels[:4], preds[:4]))


def test_miou_formula_and_absent_classes():
  conf = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
  # Class 2 is in neither labels nor predictions: left out of the mean, as nanmean does.
  iou = metrics.iou_per_class(conf)
  np.testing.assert_allclose(iou[:2], [5 / (5 + 1 + 2), 3 / (3 + 2 + 1)])
  assert np.isnan(iou[2])
  assert metrics.mean_iou(conf) == pytest.approx((5 / 8 + 3 / 6) / 2)
  summary = metrics.summarize(conf, ('a', 'b', 'c'))
  assert summary['iou_per_class']['c'] is None
  assert summary['pixel_accuracy'] == pytest.approx(8 / 11)


def _region_masks(width):
  """bool (W,) per region: True on the columns `metrics.region_bounds` gives it."""
  cols = np.arange(width)
  return {name: (cols >= a) & (cols < b) for name, (a, b) in metrics.region_bounds(width).items()}


def test_official_regions_on_cityscapes_width():
  bounds = metrics.region_bounds(2048)
  assert bounds == {'whole': (0, 2048), 'left': (0, 1024), 'center': (512, 1536),
                    'right': (1024, 2048)}
  masks = _region_masks(2048)
  assert masks['left'].sum() == masks['right'].sum() == masks['center'].sum() == 1024
  assert masks['left'][1023] and not masks['left'][1024] and masks['right'][1024]
  assert masks['center'][512] and not masks['center'][511] and not masks['center'][1536]


@pytest.mark.parametrize('width', [16, 13, 7])
def test_region_confusion_equals_ignoring_outside_pixels(width):
  """As the official code: pixels outside the region set to ignore in labels and preds."""
  labels, preds = _data((3, 5, width), seed=width)
  weights = np.ones(labels.shape)
  weights[2] = 0
  conf = np.asarray(metrics.region_confusion(labels, preds, K, weights=weights))
  assert conf.shape == (len(metrics.REGIONS), K, K)
  for i, region in enumerate(metrics.REGIONS):
    outside = ~_region_masks(width)[region]
    masked = labels[:2].copy()
    masked[:, :, outside] = 255
    np.testing.assert_array_equal(conf[i], _sk(masked, preds[:2]), err_msg=region)
  np.testing.assert_array_equal(conf[0], metrics.confusion_matrix(labels, preds, K, weights))
