r"""The channel-permutation probe benchmark: the vmap probe against one forward per ordering.

  python -m gpjax.bench probe --layer 5 --orderings 1024 --images 10000 --dtype bfloat16
  python -m gpjax.bench probe --layer 4 --orderings 64 --images 10000 --dtype bfloat16
  python -m gpjax.bench probe --layer 5 --orderings 64 --images 1000 --width 16 --grid 3 \
      --dtype float32 --repeats 3 --out docs/benchmarks/probe_cpu_layer5.json  # CPU record

Orderings per second of the vmap probe (`gpjax.probes.permutation`)
against the official way, one full forward pass over the test set per ordering
(a Python loop of jitted forwards with the ordering applied, nothing cached), on
one random-init model and random canvases (no training or data needed). The
official way is timed on ``--official-orderings`` orderings and its time for all
K is extrapolated (a labelled field). Times are medians over ``--repeats``
rounds after compiling and warm-up, each round one probe call and one official
ordering (interleaved, so other load hits both alike), synchronised with
``block_until_ready``. Targets on one H100 (bf16,
width 64, 10,000 96x96 canvases): K=1024 at layer 5 in <= 0.08 s, K=64 at
layer 4 in <= 0.7 s.

Memory: both ways see the canvases one batch at a time (``--batch`` for the probe, as
`permutation.evaluate` feeds ``config.probe.batch_size``; ``--official-batch``), drawn
inside the call from their indices, so that the peak is set by the batch and chunk flags
and not by ``--images``. The record holds the process's peak resident memory, the bytes of
device arrays held between calls and XLA's buffers for one call of each way.
"""

import argparse
import statistics
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from gpjax.models import orderings
from gpjax.core import parallel
from gpjax.bench import measure
from gpjax.models.classifier import BACKBONES, Classifier
from gpjax.probes import permutation


def add_probe(subparsers) -> None:
  p = subparsers.add_parser('probe', help='vmap channel-permutation probe vs one forward per '
                            'ordering')
  p.add_argument('--layer', type=int, default=5, choices=(1, 2, 3, 4, 5),
                 help='orderings at the input of stage 1..4, or 5 = pooled vector')
  p.add_argument('--orderings', type=int, default=1024, help='K, the identity included')
  p.add_argument('--images', type=int, default=10000, help='random test canvases')
  p.add_argument('--dtype', default='bfloat16', choices=('float32', 'bfloat16'))
  p.add_argument('--width', type=int, default=64, help='channels of stage 1 (paper: 64)')
  p.add_argument('--grid', type=int, default=3, help='g: canvases of 32g x 32g, g*g classes')
  p.add_argument('--backbone', default='resnet18', choices=tuple(BACKBONES))
  p.add_argument('--ordering-chunk', type=int, default=0,
                 help='orderings at once; 0 = all K at layer 5, 8 at layers 1-4')
  p.add_argument('--batch', type=int, default=2000,
                 help='canvases per probe call, over all devices (with --image-chunk, this '
                 'and not --images sets the memory; configs/permutation_probe.py: 2000)')
  p.add_argument('--image-chunk', type=int, default=500,
                 help='canvases per device at once within a call (configs/permutation_probe.py: '
                 '500)')
  p.add_argument('--official-orderings', type=int, default=3,
                 help='orderings timed the official way (its K time is extrapolated)')
  p.add_argument('--official-batch', type=int, default=1000,
                 help='images per jitted forward in the official loop')
  p.add_argument('--repeats', type=int, default=5,
                 help='timed rounds, each one probe call and one official ordering (medians)')
  p.add_argument('--warmup', type=int, default=1, help='untimed calls after compiling')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='', help='write the JSON record to this file')


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


def bench_probe(args: argparse.Namespace) -> dict[str, Any]:
  """Times the probe and the official loop on the same model, canvases and orderings (one
  function: both timings must share every input built here).

  Both ways make each batch's canvases inside their jitted call from the batch's indices
  (`canvases`), as the evaluation step makes its canvases from sources: no call holds more
  than one batch, so the peak memory is set by ``--batch``, ``--image-chunk`` and
  ``--official-batch``, not by ``--images``, and both pay the same (small) cost of drawing
  the canvases on every pass over the test set.
  """
  if min(args.orderings, args.images, args.official_orderings, args.batch, args.image_chunk,
         args.official_batch) < 1:
    raise SystemExit('--orderings, --images, --official-orderings, --batch, --image-chunk and '
                     '--official-batch must be >= 1.')
  chunk = args.ordering_chunk or (args.orderings if args.layer == 5 else 8)
  num_cells, size = args.grid ** 2, 32 * args.grid
  model = Classifier(num_classes=num_cells, backbone=args.backbone, head='permutenet',
                     width=args.width, permute_layer=args.layer, dtype=jnp.dtype(args.dtype))
  mesh = parallel.make_mesh()
  replicated = parallel.replicated(mesh)
  k_init, k_canvas = jax.random.split(jax.random.key(args.seed))
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, size, size, 3)), train=False),
                      out_shardings=replicated)(k_init)
  orderings = orderings.random_orderings(args.seed, args.orderings, model.ordering_length())
  device_orderings = jax.device_put(orderings, replicated)

  def make_inputs(batch):  # This device's canvases; location task: label = cell.
    images, cells = canvases(k_canvas, batch['index'], size, num_cells)
    return images, cells, cells, batch['mask']

  batches = index_batches(mesh, args.images, args.batch)
  image_chunk = min(args.image_chunk, len(batches[0]['index']) // mesh.devices.size)  # As used.
  fn = permutation.make_probe(model, layer=args.layer, num_cells=num_cells, ordering_chunk=chunk,
                              image_chunk=image_chunk, mesh=mesh, make_inputs=make_inputs)
  probe_call = lambda: parallel.accumulate(lambda b: fn(variables, b, device_orderings), batches)

  # The official way: per ordering, a full forward over every batch of the test set,
  # data parallel over the devices like the probe.
  def forward_correct(variables, batch, p):
    images, labels, _, mask = make_inputs(batch)
    logits, _ = model.apply(variables, images, train=False, ordering=p)
    return jax.lax.psum(((jnp.argmax(logits, -1) == labels) & mask).sum(), parallel.DATA_AXIS)

  forward_correct = jax.jit(jax.shard_map(
      forward_correct, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS), P()), out_specs=P()))
  official_batches = index_batches(mesh, args.images, args.official_batch)
  rows = [device_orderings[i] for i in range(min(args.official_orderings, args.orderings))]

  def official(p):
    return sum(forward_correct(variables, batch, p) for batch in official_batches)

  probe_compile, sums = measure.first_call(probe_call)
  official_compile, identity_correct = measure.first_call(lambda: official(rows[0]))
  probe_accuracy = permutation.summarize(sums['correct'], sums['count'])
  measure.times(probe_call, args.warmup)
  measure.times(lambda: official(rows[0]), args.warmup)
  # Interleaved rounds, so that load from other processes hits both alike; the
  # official way runs one ordering per round, cycling through `rows`.
  probe_times, official_times = [], []
  for i in range(max(args.repeats, len(rows))):
    probe_times += measure.times(probe_call, 1)
    official_times += measure.times(lambda: official(rows[i % len(rows)]), 1)

  held = measure.live_device_bytes()  # Model, orderings, indices: nothing per canvas.

  probe_s = statistics.median(probe_times)
  per_ordering_s = statistics.median(official_times)
  results = {
      'probe_seconds_for_K': probe_s,
      'probe_seconds_all_repeats': probe_times,
      'probe_orderings_per_s': args.orderings / probe_s,
      'probe_first_call_seconds_incl_compile': probe_compile,
      'official_seconds_per_ordering': per_ordering_s,
      'official_seconds_per_ordering_all': official_times,
      'official_orderings_timed': len(rows),
      'official_seconds_for_K_extrapolated': per_ordering_s * args.orderings,
      'official_orderings_per_s': 1.0 / per_ordering_s,
      'official_first_ordering_seconds_incl_compile': official_compile,
      'speedup': per_ordering_s * args.orderings / probe_s,
      'identity_accuracy_probe': probe_accuracy['accuracy_identity'],
      'identity_accuracy_official': int(identity_correct) / args.images,
      # What the peak is made of: arrays held between calls, and one call's buffers (lowered
      # again: the jit cache makes it free).
      'live_device_bytes': held,
      'probe_compiled_memory_bytes_per_device': measure.compiled_memory_bytes(
          fn.lower(variables, batches[0], device_orderings).compile()),
      'official_compiled_memory_bytes_per_device': measure.compiled_memory_bytes(
          forward_correct.lower(variables, official_batches[0], rows[0]).compile()),
  }
  settings = dict(vars(args), ordering_chunk=chunk, image_chunk=image_chunk,
                  batch=len(batches[0]['index']),
                  official_batch=len(official_batches[0]['index']), head='permutenet',
                  image_size=size, num_channels=int(orderings.shape[1]))
  settings.pop('command', None)
  return {'settings': settings, 'results': results}


def print_probe(record: dict[str, Any]) -> None:
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
