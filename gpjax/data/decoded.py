"""Examples kept decoded in memory after their first read, so that a split is decoded once per
process, not once per batch, evaluation and run (decoding the built-in sets' records and
resizing their images took most of a CPU run's evaluations).
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

# Largest split (decoded bytes) kept in memory; larger ones are decoded at every read.
MAX_BYTES = 512 * 2**20


class Decoded:
  """The reads of one split, each example decoded at most once.

  Args:
    decode: indices int (B,) -> dict of arrays (B, ...): the source's own read.
    size: examples in the split.
  """

  def __init__(self, decode: Callable[[np.ndarray], dict[str, np.ndarray]], size: int):
    self._decode, self._size = decode, size
    self._done = np.zeros(size, bool)
    self._arrays: dict[str, np.ndarray] | None = None
    self._too_large = False
    self._lock = threading.Lock()  # The prefetch threads of a run read concurrently.

  def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """The examples at ``indices`` (int (B,), B >= 1, each in [0, size)), as ``decode`` gives
    them."""
    indices = np.asarray(indices, np.int64).reshape(-1)
    if not indices.size:
      raise ValueError('read() needs at least one index.')
    if indices.min() < 0 or indices.max() >= self._size:
      raise IndexError(f'indices must lie in [0, {self._size}); got {indices.min()}..'
                       f'{indices.max()}.')
    if self._too_large:
      return self._decode(indices)
    missing = np.unique(indices[~self._done[indices]])
    if missing.size:
      batch = self._decode(missing)
      with self._lock:
        if self._arrays is None:
          per_example = sum(v[0].nbytes for v in batch.values())
          if per_example * self._size > MAX_BYTES:
            self._too_large = True
            return {k: v[np.searchsorted(missing, indices)] for k, v in batch.items()}
          self._arrays = {k: np.zeros((self._size, *v.shape[1:]), v.dtype)
                          for k, v in batch.items()}
        for key, value in batch.items():
          self._arrays[key][missing] = value
        self._done[missing] = True  # Only once the arrays hold them.
    return {key: value[indices] for key, value in self._arrays.items()}
