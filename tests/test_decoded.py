"""gpjax.data.decoded: each example decoded once, reads equal to the source's own, splits over
the memory limit decoded at every read."""

import numpy as np
import pytest

from gpjax.data import decoded


class Counting:
  """A split of ``size`` examples whose decode counts how often each index was decoded."""

  def __init__(self, size):
    self.calls = np.zeros(size, np.int64)

  def __call__(self, indices):
    np.add.at(self.calls, indices, 1)
    indices = np.asarray(indices)
    return {'image': (indices[:, None, None] * np.ones((1, 2, 3))).astype(np.uint8),
            'label': indices.astype(np.int32)}


def test_each_example_is_decoded_once_and_reads_match_the_source():
  decode, reference = Counting(10), Counting(10)
  split = decoded.Decoded(decode, 10)
  for indices in ([3, 1, 3], [0, 1, 2, 3], [9, 9], [3, 1, 3]):
    got, want = split.read(np.array(indices)), reference(np.array(indices))
    assert got.keys() == want.keys()
    for key in got:
      np.testing.assert_array_equal(got[key], want[key])
      assert got[key].dtype == want[key].dtype
  np.testing.assert_array_equal(decode.calls, [1, 1, 1, 1, 0, 0, 0, 0, 0, 1])


def test_a_split_over_the_limit_is_decoded_at_every_read(monkeypatch):
  monkeypatch.setattr(decoded, 'MAX_BYTES', 99)  # Ten examples of 2x3 + 4 bytes need 100.
  decode = Counting(10)
  split = decoded.Decoded(decode, 10)
  for _ in range(2):
    np.testing.assert_array_equal(split.read(np.array([4, 2, 4]))['label'], [4, 2, 4])
  # The first read decodes each index once, the second as it is asked (4 twice).
  np.testing.assert_array_equal(decode.calls, [0, 0, 2, 0, 3, 0, 0, 0, 0, 0])


def test_indices_outside_the_split_or_none_are_refused():
  split = decoded.Decoded(Counting(5), 5)
  for indices in ([5], [-1]):
    with pytest.raises(IndexError, match=r'\[0, 5\)'):
      split.read(np.array(indices))
  with pytest.raises(ValueError, match='at least one index'):
    split.read(np.array([], np.int64))
