"""The probe benchmark: its canvases and batches, the probe agreeing with the official
way, and memory set by the batch settings, not by the number of canvases.

No timing assertions.
"""

import jax
import numpy as np
import pytest
from test_bench import run_and_read

from gpjax.core import parallel
from gpjax.bench import probe

# Layer 5 of a width-4 ResNet-18 on 64x64 canvases: the probe in 100-canvas calls of 50 at
# once, the official way in calls of 50 (a different batching of the same canvases).
TINY = ['--config.layer=5', '--config.orderings=4', '--config.width=4', '--config.grid=2',
        '--config.dtype=float32', '--config.repeats=1', '--config.warmup=0',
        '--config.official_orderings=1', '--config.batch=100', '--config.image_chunk=50',
        '--config.official_batch=50']


def test_canvases_are_the_same_in_every_batching():
  key = jax.random.key(3)
  images, cells = probe.canvases(key, np.arange(6), 8, 4)
  first, first_cells = probe.canvases(key, np.arange(4), 8, 4)
  last, last_cells = probe.canvases(key, np.arange(4, 6), 8, 4)
  np.testing.assert_array_equal(np.concatenate([first, last]), images)
  np.testing.assert_array_equal(np.concatenate([first_cells, last_cells]), cells)
  assert images.shape == (6, 8, 8, 3) and 0.5 < float(np.std(images)) < 1.5
  assert set(np.asarray(cells).tolist()) <= {0, 1, 2, 3}
  assert not np.array_equal(images[0], images[1])


def test_index_batches_cover_every_canvas_once():
  batches = probe.index_batches(parallel.make_mesh(), 7, 3)
  index = np.concatenate([np.asarray(b['index']) for b in batches])
  mask = np.concatenate([np.asarray(b['mask']) for b in batches])
  assert [len(b['index']) for b in batches] == [3, 3, 3]
  assert index[mask].tolist() == list(range(7)) and mask.sum() == 7
  assert [len(b['index']) for b in probe.index_batches(parallel.make_mesh(), 2, 3)] == [2]


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  """The records of the tiny probe benchmark on 200 and 400 canvases."""
  return {n: run_and_read(tmp_path_factory.mktemp(f'probe{n}'), 'probe',
                         [*TINY, f'--config.images={n}'])
          for n in (200, 400)}


def test_probe_agrees_with_the_official_way(records):
  for record in records.values():
    r, s = record['results'], record['settings']
    assert r['identity_accuracy_probe'] == r['identity_accuracy_official']
    assert 0 < r['identity_accuracy_probe'] < 1
    assert r['probe_orderings_per_s'] > 0 and r['official_orderings_per_s'] > 0
    assert (s['batch'], s['image_chunk'], s['ordering_chunk']) == (100, 50, 4)
    assert record['peak_rss_bytes'] > r['live_device_bytes'] > 0


def test_doubling_the_canvases_leaves_the_memory_unchanged(records):
  """The peak is what the benchmark holds between calls plus one call's buffers; both are
  measured exactly here, as the process's peak resident memory cannot be: at this size
  it varied by +-10% between runs of the same command (compile memory dominates)."""
  small, large = records[200]['results'], records[400]['results']
  for field in ('probe_compiled_memory_bytes_per_device',
                'official_compiled_memory_bytes_per_device'):
    assert small[field] == large[field] > 0, field
  # 200 more canvases: 200 more indices (int32 + bool mask) for each of the two ways.
  assert large['live_device_bytes'] - small['live_device_bytes'] == 2 * 200 * 5
