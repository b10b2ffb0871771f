"""The position attack: masks as data reproduce direct forwards exactly (N = 0 is the clean
model), results and curves (the study that runs it end to end: test_segment_study)."""

import jax
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion

from gpjax.core import metrics
from gpjax.models.deeplab import DeepLabV3
from gpjax.probes import attack

K = 4


def test_channel_masks():
  ranking = {'overall': [3, 1, 4, 0, 2, 5], 'left': [5, 4, 3, 2, 1, 0], 'right': list(range(6))}
  masks, rows = attack.channel_masks(ranking, [0, 2, 3, 7], 6, random_draws=2, seed=0)
  assert masks.shape == (1 + (3 + 2) * 2, 6) and len(rows) == len(masks)
  assert rows[0] == {'kind': 'clean', 'count': 0, 'draw': None} and masks[0].all()
  by_row = {(r['kind'], r['count'], r['draw']): m for r, m in zip(rows, masks)}
  np.testing.assert_array_equal(by_row['overall', 3, None], [1, 0, 1, 0, 0, 1])
  np.testing.assert_array_equal(by_row['left', 2, None], [1, 1, 1, 1, 0, 0])
  for draw in (0, 1):  # Random sets of one draw are nested; draws differ.
    small, large = by_row['random', 2, draw], by_row['random', 3, draw]
    assert (small.sum(), large.sum()) == (4, 3) and (large <= small).all()
  assert not np.array_equal(by_row['random', 3, 0], by_row['random', 3, 1])
  assert not any(r['count'] == 7 for r in rows)  # N > C skipped.


@pytest.fixture(scope='module')
def tiny_model(init_variables):
  x = np.zeros((1, 32, 48, 3), np.float32)
  model = DeepLabV3(num_classes=K, backbone='resnet18', width=2, aspp_features=4)
  return model, init_variables(model, x, train=False)


def test_masks_as_data_equal_direct_forwards(tiny_model):
  model, variables = tiny_model
  rng = np.random.default_rng(0)
  images = rng.normal(size=(3, 32, 48, 3)).astype(np.float32)
  labels = rng.integers(0, K, (3, 32, 48))
  labels[rng.random(labels.shape) < 0.1] = 255
  weights = np.ones(labels.shape, np.float32)
  weights[2] = 0  # A padding row.
  c = model.feature_channels
  ranking = {k: rng.permutation(c).tolist() for k in attack.KINDS}
  masks, rows = attack.channel_masks(ranking, [0, 1, 4, 12], c, random_draws=2, seed=0)
  conf = jax.jit(lambda v, m: attack.attack_sums(model, v, images, labels, weights, m,
                                                 num_classes=K, mask_chunk=3))(variables, masks)
  conf = np.asarray(conf)
  assert conf.shape == (len(rows), len(metrics.REGIONS), K, K)
  clean, _ = model.apply(variables, images, train=False)
  preds = np.asarray(clean).argmax(-1)
  keep = labels[:2].reshape(-1) != 255
  np.testing.assert_array_equal(conf[0, 0], sk_confusion(labels[:2].reshape(-1)[keep],
                                                         preds[:2].reshape(-1)[keep],
                                                         labels=range(K)))
  np.testing.assert_array_equal(conf[0], metrics.region_confusion(labels, preds, K, weights))
  for k in (3, 7, len(rows) - 1):
    logits, _ = model.apply(variables, images, train=False, channel_mask=masks[k])
    direct = metrics.region_confusion(labels, np.asarray(logits).argmax(-1), K, weights)
    np.testing.assert_array_equal(conf[k], direct, err_msg=str(rows[k]))
  results = attack.summarize(conf, rows, [0, 1, 4, 12], [str(i) for i in range(K)])
  assert results['counts'] == [0, 1, 4, 12]
  assert results['top_overall']['whole'][0] == results['clean']['whole'] == metrics.mean_iou(
      conf[0, 0])
  assert results['random']['left']['draws'][1][2] == metrics.mean_iou(
      conf[rows.index({'kind': 'random', 'count': 4, 'draw': 1}), 1])
