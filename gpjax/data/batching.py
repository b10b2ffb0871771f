"""Step-indexed host batching shared by every task, with no TensorFlow.

Every training batch is a pure function of ``(seed, step)``: resuming at step
``s`` reads exactly the examples an uninterrupted run would have read, with no
iterator state to checkpoint. The example stream is one endless sequence of
per-epoch permutations, so a batch may straddle two epochs; nothing is dropped
and every batch has the full size. Each process reads only its contiguous slice
of the global batch. A source is anything with ``len`` and ``read(indices)``
returning a dict of stacked arrays (`input_pipeline.Source`,
`segmentation.SegSource`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
from typing import Any, Callable, Iterator, Protocol

import numpy as np

Batch = dict[str, np.ndarray]


class Readable(Protocol):
  """A split with random access: ``len`` and ``read(indices) -> {'image', 'label', ...}``."""

  def __len__(self) -> int: ...

  def read(self, indices: np.ndarray) -> Batch: ...


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  return np.random.default_rng((seed, epoch)).permutation(num_examples)


def batch_indices(
    step: int, *, num_examples: int, global_batch_size: int, seed: int
) -> np.ndarray:
  """The example indices of the global batch at `step`.

  Positions ``step * B ... step * B + B - 1`` of an endless stream made of one
  fresh permutation per epoch (``default_rng((seed, epoch))``); a batch may
  cross an epoch boundary, and every example appears once per epoch.

  Args:
    step: training step, >= 0.
    num_examples: size of the split.
    global_batch_size: examples per step over all processes.
    seed: data-order seed.

  Returns:
    int64 (global_batch_size,) indices in [0, num_examples).
  """
  if step < 0 or num_examples <= 0 or global_batch_size <= 0:
    raise ValueError(
        f'Need step >= 0, num_examples > 0 and global_batch_size > 0; got '
        f'{step}, {num_examples}, {global_batch_size}.')
  positions = step * global_batch_size + np.arange(global_batch_size, dtype=np.int64)
  epochs, offsets = np.divmod(positions, num_examples)
  out = np.empty(global_batch_size, np.int64)
  for epoch in np.unique(epochs):
    here = epochs == epoch
    out[here] = _epoch_permutation(seed, int(epoch), num_examples)[offsets[here]]
  return out


def _local_slice(global_batch_size: int, process_index: int, process_count: int) -> slice:
  if global_batch_size % process_count:
    raise ValueError(
        f'Global batch size {global_batch_size} is not divisible by the '
        f'process count {process_count}.')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count}).')
  local = global_batch_size // process_count
  return slice(process_index * local, (process_index + 1) * local)


def host_batch(
    source: Readable, step: int, *, global_batch_size: int, seed: int,
    process_index: int = 0, process_count: int = 1,
) -> Batch:
  """This process's share of the training batch at `step`.

  Args:
    source: the training split (an `input_pipeline.Source`, a
      `segmentation.SegSource`, ...).
    step: training step.
    global_batch_size: batch size over all processes; divisible by
      `process_count`.
    seed: data-order seed.
    process_index: this process (``jax.process_index()``).
    process_count: number of processes (``jax.process_count()``).

  Returns:
    ``source.read`` of this process's indices (e.g. ``'image'`` uint8
    (B_local, h, w, 3), ``'label'`` int32 (B_local,) or uint8 (B_local, h, w))
    plus ``'index'`` int32 (B_local,), with ``B_local = global_batch_size //
    process_count``; ``index`` is each row's position in the global batch, rows
    ``[process_index * B_local, (process_index + 1) * B_local)`` of the global
    batch.
  """
  local = _local_slice(global_batch_size, process_index, process_count)
  indices = batch_indices(
      step, num_examples=len(source), global_batch_size=global_batch_size, seed=seed)
  batch = source.read(indices[local])
  batch['index'] = np.arange(local.start, local.stop, dtype=np.int32)
  return batch


def prefetch(
    fn: Callable[[int], Any], start_step: int, num_steps: int | None, buffer: int = 2
) -> Iterator[Any]:
  """Yields ``fn(step)`` for consecutive steps, computed ahead on one thread.

  Results come in step order; an exception in `fn` is raised at its step.
  Closing the generator (``close()``, or leaving a ``contextlib.closing``
  block) cancels the queued calls and waits for a running one to finish.

  Args:
    fn: the per-step work, e.g. a `host_batch` partial.
    start_step: first step.
    num_steps: how many steps; None for no end.
    buffer: how many results to keep computed ahead.

  Yields:
    ``fn(start_step)``, ``fn(start_step + 1)``, ...
  """
  if buffer < 1:
    raise ValueError(f'buffer must be >= 1, got {buffer}.')
  stop = None if num_steps is None else start_step + num_steps
  executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='prefetch')
  pending: collections.deque[concurrent.futures.Future] = collections.deque()
  next_step = start_step
  try:
    while True:
      while len(pending) < buffer and (stop is None or next_step < stop):
        pending.append(executor.submit(fn, next_step))
        next_step += 1
      if not pending:
        return
      yield pending.popleft().result()
  finally:
    executor.shutdown(wait=True, cancel_futures=True)


def eval_batches(
    source: Readable, batch_size: int, *, num_examples: int = 0, pad_label: int = 0,
    process_index: int = 0, process_count: int = 1
) -> Iterator[Batch]:
  """The first ``num_examples`` of a split in order, padded so that every host runs the
  same steps.

  Global batch ``k`` holds examples ``[k * batch_size, (k + 1) * batch_size)``;
  positions past the end are zero images, labels ``pad_label`` and ``mask=False``.
  Summing a metric times ``mask`` over all batches and hosts counts each example
  exactly once.

  Args:
    source: the evaluation split.
    batch_size: global batch size, divisible by `process_count`.
    num_examples: how many examples from the start; 0 = all.
    pad_label: label of the padding rows (0 for classes; 255, ignored, for masks).
    process_index: this process.
    process_count: number of processes.

  Yields:
    ``source.read``'s ``'image'`` and ``'label'`` (B_local, ...), ``'mask'`` bool
    (B_local,) and ``'index'`` int32 (B_local,), the example's position in the split;
    ``ceil(num_examples / batch_size)`` batches.
  """
  local = _local_slice(batch_size, process_index, process_count)
  total = min(num_examples or len(source), len(source))
  first = source.read(np.zeros(1, np.int64))  # Hosts whose slice is all padding need it too.
  for start in range(0, total, batch_size):
    positions = np.arange(start, start + batch_size)[local]
    mask = positions < total
    n = len(positions)
    batch = {'image': np.zeros((n, *first['image'].shape[1:]), first['image'].dtype),
             'label': np.full((n, *first['label'].shape[1:]), pad_label, first['label'].dtype),
             'mask': mask, 'index': positions.astype(np.int32)}
    if mask.any():
      real = source.read(positions[mask])
      batch['image'][mask], batch['label'][mask] = real['image'], real['label']
    yield batch
