r"""The channel-permutation probe benchmark: the vmap probe against one forward per ordering.

  python -m gpjax.bench --config=configs/bench/probe.py --workdir=runs/bench/probe
  python -m gpjax.bench --config=configs/bench/probe.py --workdir=runs/bench/probe4 \
      --config.layer=4 --config.orderings=64
  python -m gpjax.bench --config=configs/bench/probe.py --workdir=runs/bench/probe_cpu \
      --config.orderings=64 --config.images=1000 --config.width=16 --config.dtype=float32 \
      --config.repeats=3  # The CPU record docs/benchmarks/probe_cpu_layer5.json

Orderings per second of the vmap probe (`gpjax.probes.permutation`)
against the official way, one full forward pass over the test set per ordering
(a Python loop of jitted forwards with the ordering applied, nothing cached), on
one random-init model and random canvases (no training or data needed). The
official way is timed on ``config.official_orderings`` orderings and its time for all
K is extrapolated (a labelled field). Times are medians over ``config.repeats``
rounds after compiling and warm-up, each round one probe call and one official
ordering (interleaved, so other load hits both alike), synchronised with
``block_until_ready``. Targets on one H100 (bf16,
width 64, 10,000 96x96 canvases): K=1024 at layer 5 in <= 0.08 s, K=64 at
layer 4 in <= 0.7 s.

Memory: both ways see the canvases one batch at a time (``config.batch`` for the probe, as
`permutation.evaluate` feeds ``config.probe.batch_size``; ``config.official_batch``), drawn
inside the call from their indices, so that the peak is set by the batch and chunk fields
and not by ``config.images``. The record holds the process's peak resident memory, the bytes of
device arrays held between calls and XLA's buffers for one call of each way.
"""

import statistics
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from gpjax.models import orderings as ordering_lib
from gpjax.core import parallel
from gpjax.bench import fields, measure
from gpjax.models.classifier import BACKBONES, PERMUTE_LAYERS, Classifier
from gpjax.probes import permutation
from gpjax.checks import DTYPES, at_least, one_of


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field, its value and what is allowed."""
  one_of('layer', config.layer, PERMUTE_LAYERS)
  for name in ('orderings', 'images', 'width', 'grid', 'batch', 'image_chunk',
               'official_orderings', 'official_batch', 'repeats'):
    at_least(name, config[name], 1)
  for name in ('ordering_chunk', 'warmup', 'seed'):
    at_least(name, config[name], 0)
  one_of('dtype', config.dtype, DTYPES)
  one_of('backbone', config.backbone, tuple(BACKBONES))


def canvases(key: jax.Array, index: jax.Array, size: int,
             num_cells: int) -> tuple[jax.Array, jax.Array]:
  """The random test canvases of global indices ``index`` (n,): float32 (n, size, size, 3)
  normal noise and int32 (n,) cells in 0..num_cells-1, each from ``fold_in(key, index)``,
  so that every batching of the indices gives an image the same canvas and cell."""
  def one(i):
    k_image, k_cell = jax.random.split(jax.random.fold_in(key, i))
    return (jax.random.normal(k_image, (size, size, 3), jnp.float32),
            jax.random.randint(k_cell, (), 0, num_cells, jnp.int32))

  return jax.vmap(one)(index)


def index_batches(mesh: jax.sharding.Mesh, num_images: int,
                  batch_size: int) -> list[dict[str, jax.Array]]:
  """Indices 0..num_images-1 as batches ``{'index', 'mask'}`` of ``batch_size`` (at most
  ``num_images``, rounded up to the device count; the last padded with mask False),
  sharded over ``data``: 5 bytes an image, the only per-image memory the benchmark holds."""
  devices = mesh.devices.size
  size = -(-min(batch_size, num_images) // devices) * devices
  batches = []
  for start in range(0, num_images, size):
    index = np.arange(start, start + size, dtype=np.int32)
    batches.append(jax.device_put({'index': index, 'mask': index < num_images},
                                  parallel.data_sharded(mesh)))
  return batches


class _Setup(NamedTuple):
  """What both ways share: the model, its variables, the orderings and the canvases."""
  model: Classifier
  mesh: jax.sharding.Mesh
  variables: Any
  orderings: jax.Array  # int32 (K, C), replicated: row 0 is the identity.
  make_inputs: Callable[[dict[str, jax.Array]], tuple[jax.Array, ...]]
  num_cells: int
  size: int


def _setup(config: ml_collections.ConfigDict) -> _Setup:
  """One random-init PermuteNet, its orderings and its canvases' maker."""
  num_cells, size = config.grid ** 2, 32 * config.grid
  model = Classifier(num_classes=num_cells, backbone=config.backbone, head='permutenet',
                     width=config.width, permute_layer=config.layer,
                     dtype=jnp.dtype(config.dtype))
  mesh = parallel.make_mesh()
  replicated = parallel.replicated(mesh)
  k_init, k_canvas = jax.random.split(jax.random.key(config.seed))
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, size, size, 3)), train=False),
                      out_shardings=replicated)(k_init)
  orderings = ordering_lib.random_orderings(config.seed, config.orderings,
                                           model.ordering_length())

  def make_inputs(batch):  # This device's canvases; location task: label = cell.
    images, cells = canvases(k_canvas, batch['index'], size, num_cells)
    return images, cells, cells, batch['mask']

  return _Setup(model, mesh, variables, jax.device_put(orderings, replicated), make_inputs,
                num_cells, size)


def _probe_way(s: _Setup, config: ml_collections.ConfigDict):
  """The vmap probe: its jitted call on one batch, a call over every batch, the batches, and
  the ordering and image chunks as used."""
  ordering_chunk = config.ordering_chunk or (config.orderings if config.layer == 5 else 8)
  batches = index_batches(s.mesh, config.images, config.batch)
  image_chunk = min(config.image_chunk, len(batches[0]['index']) // s.mesh.devices.size)
  fn = permutation.make_probe(s.model, layer=config.layer, num_cells=s.num_cells,
                              ordering_chunk=ordering_chunk, image_chunk=image_chunk,
                              mesh=s.mesh, make_inputs=s.make_inputs)
  call = lambda: parallel.accumulate(lambda b: fn(s.variables, b, s.orderings), batches)
  return fn, call, batches, ordering_chunk, image_chunk


def _official_way(s: _Setup, config: ml_collections.ConfigDict):
  """The official way: per ordering, a full forward over every batch of the test set, data
  parallel over the devices like the probe. Returns its jitted call on one batch, the
  batches, and ``official(p)``, the correct predictions over all of them under ordering p."""
  def forward_correct(variables, batch, p):
    images, labels, _, mask = s.make_inputs(batch)
    logits, _ = s.model.apply(variables, images, train=False, ordering=p)
    return jax.lax.psum(((jnp.argmax(logits, -1) == labels) & mask).sum(), parallel.DATA_AXIS)

  forward_correct = jax.jit(jax.shard_map(
      forward_correct, mesh=s.mesh, in_specs=(P(), P(parallel.DATA_AXIS), P()), out_specs=P()))
  batches = index_batches(s.mesh, config.images, config.official_batch)

  def official(p):
    return sum(forward_correct(s.variables, batch, p) for batch in batches)

  return forward_correct, batches, official


def _time_both(probe_call, official, rows: list[jax.Array],
               config: ml_collections.ConfigDict) -> dict[str, Any]:
  """First calls (compiles included), warm-up, then interleaved rounds, so that load from
  other processes hits both ways alike; the official way runs one ordering per round,
  cycling through ``rows``."""
  probe_compile, sums = measure.first_call(probe_call)
  official_compile, identity_correct = measure.first_call(lambda: official(rows[0]))
  measure.times(probe_call, config.warmup)
  measure.times(lambda: official(rows[0]), config.warmup)
  probe_times, official_times = [], []
  for i in range(max(config.repeats, len(rows))):
    probe_times += measure.times(probe_call, 1)
    official_times += measure.times(lambda: official(rows[i % len(rows)]), 1)
  return {'probe_compile': probe_compile, 'sums': sums, 'official_compile': official_compile,
          'identity_correct': int(identity_correct), 'probe_times': probe_times,
          'official_times': official_times}


def _results(t: dict[str, Any], num_rows: int,
             config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The record's speeds and identity accuracies from `_time_both`'s timings."""
  probe_s = statistics.median(t['probe_times'])
  per_ordering_s = statistics.median(t['official_times'])
  probe_accuracy = permutation.summarize(t['sums']['correct'], t['sums']['count'])
  return {
      'probe_seconds_for_K': probe_s,
      'probe_seconds_all_repeats': t['probe_times'],
      'probe_orderings_per_s': config.orderings / probe_s,
      'probe_first_call_seconds_incl_compile': t['probe_compile'],
      'official_seconds_per_ordering': per_ordering_s,
      'official_seconds_per_ordering_all': t['official_times'],
      'official_orderings_timed': num_rows,
      'official_seconds_for_K_extrapolated': per_ordering_s * config.orderings,
      'official_orderings_per_s': 1.0 / per_ordering_s,
      'official_first_ordering_seconds_incl_compile': t['official_compile'],
      'speedup': per_ordering_s * config.orderings / probe_s,
      'identity_accuracy_probe': probe_accuracy['accuracy_identity'],
      'identity_accuracy_official': t['identity_correct'] / config.images,
  }


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Times the probe and the official loop on the same model, canvases and orderings.

  Both ways make each batch's canvases inside their jitted call from the batch's indices
  (`canvases`), as the evaluation step makes its canvases from sources: no call holds more
  than one batch, so the peak memory is set by ``config.batch``, ``config.image_chunk`` and
  ``config.official_batch``, not by ``config.images``, and both pay the same (small) cost of
  drawing the canvases on every pass over the test set.
  """
  del workdir  # Nothing is kept but the record, which gpjax.bench writes there.
  s = _setup(config)
  fn, probe_call, batches, ordering_chunk, image_chunk = _probe_way(s, config)
  forward_correct, official_batches, official = _official_way(s, config)
  rows = [s.orderings[i] for i in range(min(config.official_orderings, config.orderings))]
  results = _results(_time_both(probe_call, official, rows, config), len(rows), config)
  # What the peak is made of: arrays held between calls (model, orderings, indices: nothing
  # per canvas), and one call's buffers (lowered again: the jit cache makes it free).
  results['live_device_bytes'] = measure.live_device_bytes()
  results['probe_compiled_memory_bytes_per_device'] = measure.compiled_memory_bytes(
      fn.lower(s.variables, batches[0], s.orderings).compile())
  results['official_compiled_memory_bytes_per_device'] = measure.compiled_memory_bytes(
      forward_correct.lower(s.variables, official_batches[0], rows[0]).compile())
  settings = dict(fields.settings(config), ordering_chunk=ordering_chunk,
                  image_chunk=image_chunk, batch=len(batches[0]['index']),
                  official_batch=len(official_batches[0]['index']), head='permutenet',
                  image_size=s.size, num_channels=int(s.orderings.shape[1]))
  return {'settings': settings, 'results': results}


def show(record: dict[str, Any]) -> None:
  s, r = record['settings'], record['results']
  print(f"channel-permutation probe: layer {s['layer']}, K={s['orderings']}, {s['images']} "
        f"canvases {s['image_size']}x{s['image_size']}, {s['backbone']} width {s['width']}, "
        f"{s['dtype']}, {record['device_kind']} x{record['num_devices']}, jax "
        f"{record['jax_version']}")
  rows = [('vmap probe (all K)', r['probe_seconds_for_K'], r['probe_orderings_per_s']),
          (f"official, {r['official_orderings_timed']} orderings timed, x K extrapolated",
           r['official_seconds_for_K_extrapolated'], r['official_orderings_per_s'])]
  print(f"{'method':<52} {'seconds for K':>14} {'orderings/s':>12}")
  for name, seconds, rate in rows:
    print(f'{name:<52} {seconds:>14.4f} {rate:>12.2f}')
  print(f"{'speed-up':<52} {r['speedup']:>14.1f}x")
  print(f"identity accuracy: probe {r['identity_accuracy_probe']:.4f}, official "
        f"{r['identity_accuracy_official']:.4f}")
  mib = lambda v: '-' if v is None else f'{v / 2 ** 20:.0f} MiB'
  print(f"device arrays held between calls: {mib(r['live_device_bytes'])}")
  print(f"one call's buffers per device (XLA): probe "
        f"{mib(r['probe_compiled_memory_bytes_per_device'])} ({s['batch']} canvases, "
        f"{s['image_chunk']} at once), official "
        f"{mib(r['official_compiled_memory_bytes_per_device'])} ({s['official_batch']} canvases)")
