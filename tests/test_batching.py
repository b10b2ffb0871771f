"""Tests for gpjax.data.batching: step-indexed batches, host slices, prefetch, evaluation."""

import threading
import time

import numpy as np
import pytest

from gpjax.data import batching
from gpjax.data import input_pipeline as ip


@pytest.fixture(scope='module')
def data_dir(builtin_dir):
  return builtin_dir('gpjax_digits')


@pytest.fixture(scope='module')
def digits_test(data_dir):
  return ip.load_source('gpjax_digits', 'test', data_dir=data_dir)


class _Coded:
  """A split of n examples whose image pixels hold the example index (labels: i % 5, or a
  (2, 2) mask of i % 7 when ``masks``)."""

  def __init__(self, n, masks):
    self.n, self.masks = n, masks

  def __len__(self):
    return self.n

  def read(self, indices):
    idx = np.asarray(indices).reshape(-1)
    images = np.stack([np.full((2, 2, 3), i, np.uint8) for i in idx])
    if self.masks:
      return {'image': images, 'label': np.stack([np.full((2, 2), i % 7, np.uint8) for i in idx])}
    return {'image': images, 'label': (idx % 5).astype(np.int32)}


# The batches of both tasks before their batching became one (recorded from the old
# input_pipeline.host_batch and segmentation.train_batch: the same for both), n = 11,
# global batch 6, seed 3, two processes: {step: (process 0, process 1) example indices}.
_TRAIN = {0: ([9, 7, 0], [2, 1, 4]), 2: ([4, 10, 1], [2, 5, 9]), 5: ([8, 3, 5], [5, 2, 4])}


@pytest.mark.parametrize('masks', [False, True])
def test_train_batches_are_the_recorded_ones(masks):
  source = _Coded(11, masks)
  for step, want in _TRAIN.items():
    for p in range(2):
      b = batching.host_batch(source, step, global_batch_size=6, seed=3, process_index=p,
                              process_count=2)
      assert b['image'][:, 0, 0, 0].tolist() == want[p]
      assert b['index'].tolist() == [3 * p, 3 * p + 1, 3 * p + 2]
      assert b['label'].dtype == (np.uint8 if masks else np.int32)


def test_eval_batches_are_the_recorded_ones():
  """Process 1 of 2, batch 4: classes (all 11, labels padded 0) and masks (first 7, 255)."""
  classes = list(batching.eval_batches(_Coded(11, False), 4, process_index=1, process_count=2))
  assert [b['image'][:, 0, 0, 0].tolist() for b in classes] == [[2, 3], [6, 7], [10, 0]]
  assert [b['label'].tolist() for b in classes] == [[2, 3], [1, 2], [0, 0]]
  assert [b['mask'].tolist() for b in classes] == [[True, True]] * 2 + [[True, False]]
  assert [b['index'].tolist() for b in classes] == [[2, 3], [6, 7], [10, 11]]
  masks = list(batching.eval_batches(_Coded(11, True), 4, num_examples=7, pad_label=255,
                                     process_index=1, process_count=2))
  assert [b['image'][:, 0, 0, 0].tolist() for b in masks] == [[2, 3], [6, 0]]
  assert [b['label'][:, 0, 0].tolist() for b in masks] == [[2, 3], [6, 255]]
  assert [b['mask'].tolist() for b in masks] == [[True, True], [True, False]]
  assert masks[1]['label'].dtype == np.uint8 and (masks[1]['label'][1] == 255).all()


# --- batching -------------------------------------------------------------------


def test_batch_indices_each_example_once_per_epoch():
  n, b = 10, 4  # 10 steps = 4 epochs; steps 2, 4, 7 straddle an epoch boundary.
  stream = np.concatenate([
      batching.batch_indices(s, num_examples=n, global_batch_size=b, seed=7) for s in range(10)])
  epochs = stream.reshape(4, n)
  for epoch in epochs:
    assert sorted(epoch) == list(range(n))
  assert len({tuple(e) for e in epochs}) == 4  # A fresh order every epoch.
  assert list(epochs[0]) != list(range(n))  # Shuffled.


def test_batch_indices_pure_function_of_step_and_seed():
  kwargs = dict(num_examples=1000, global_batch_size=64)
  a = batching.batch_indices(123, seed=1, **kwargs)
  batching.batch_indices(5, seed=1, **kwargs)
  np.testing.assert_array_equal(a, batching.batch_indices(123, seed=1, **kwargs))
  assert not np.array_equal(a, batching.batch_indices(123, seed=2, **kwargs))
  assert not np.array_equal(a, batching.batch_indices(124, seed=1, **kwargs))
  # Batch larger than the data: still a run of whole permutations.
  big = batching.batch_indices(0, num_examples=3, global_batch_size=9, seed=0)
  assert sorted(big) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  with pytest.raises(ValueError):
    batching.batch_indices(-1, seed=0, **kwargs)


def test_host_slices_concatenate_to_global_batch(digits_test):
  source, _ = digits_test
  step, b, seed = 41, 12, 3
  whole = source.read(batching.batch_indices(step, num_examples=297, global_batch_size=b,
                                             seed=seed))
  parts = [
      batching.host_batch(source, step, global_batch_size=b, seed=seed,
                    process_index=p, process_count=4)
      for p in range(4)
  ]
  assert all(part['image'].shape == (3, 32, 32, 3) for part in parts)
  for key in ('image', 'label'):
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
  single = batching.host_batch(source, step, global_batch_size=b, seed=seed)
  np.testing.assert_array_equal(single['label'], whole['label'])
  with pytest.raises(ValueError, match='not divisible'):
    batching.host_batch(source, 0, global_batch_size=10, seed=0, process_index=0, process_count=4)


def test_prefetch_in_order_and_stops_cleanly():
  calls = []
  lock = threading.Lock()

  def fn(step):
    time.sleep(0.01)
    with lock:
      calls.append(step)
    return step * step

  assert list(batching.prefetch(fn, 5, 6, buffer=3)) == [s * s for s in range(5, 11)]
  assert calls == list(range(5, 11))

  calls.clear()
  batches = batching.prefetch(fn, 0, None, buffer=2)
  assert [next(batches) for _ in range(4)] == [0, 1, 4, 9]
  batches.close()
  count = len(calls)
  assert count <= 4 + 2
  time.sleep(0.1)
  assert len(calls) == count  # Nothing runs after close().
  assert not [t for t in threading.enumerate() if t.name.startswith('prefetch')]


def test_prefetch_raises_at_failing_step():
  def fn(step):
    if step == 2:
      raise RuntimeError('bad step')
    return step

  batches = batching.prefetch(fn, 0, 5)
  assert [next(batches), next(batches)] == [0, 1]
  with pytest.raises(RuntimeError, match='bad step'):
    next(batches)


# --- evaluation -----------------------------------------------------------------


@pytest.mark.parametrize('split, batch_size, process_count', [
    ('test', 12, 1), ('test', 12, 3), ('test[:25]', 48, 3), ('test[:25]', 5, 1),
])
def test_eval_batches_cover_each_example_once(data_dir, split, batch_size, process_count):
  source, _ = ip.load_source('gpjax_digits', split, data_dir=data_dir)
  n = len(source)
  per_host = [
      list(batching.eval_batches(source, batch_size, process_index=p, process_count=process_count))
      for p in range(process_count)
  ]
  num_batches = -(-n // batch_size)
  assert all(len(batches) == num_batches for batches in per_host)
  everything = source.read(np.arange(n))
  images, labels = [], []
  for k in range(num_batches):
    for batches in per_host:
      batch = batches[k]
      assert batch['image'].shape == (batch_size // process_count, 32, 32, 3)
      assert batch['mask'].dtype == bool
      images.append(batch['image'][batch['mask']])
      labels.append(batch['label'][batch['mask']])
      assert not batch['image'][~batch['mask']].any()  # Padding is zeros.
  np.testing.assert_array_equal(np.concatenate(images), everything['image'])
  np.testing.assert_array_equal(np.concatenate(labels), everything['label'])
