r"""Benchmarks, each measured against its baseline in the same run.

  python -m gpjax.bench probe --layer 5 --orderings 1024 --images 10000 --dtype bfloat16
  python -m gpjax.bench probe --layer 4 --orderings 64 --images 10000 --dtype bfloat16
  python -m gpjax.bench probe --layer 5 --orderings 64 --images 1000 --width 16 --grid 3 \
      --dtype float32 --repeats 3 --out docs/benchmarks/probe_cpu_layer5.json  # CPU record

``probe``: orderings per second of the vmap probe (`gpjax.probes.permutation`)
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

``train`` / ``eval`` / ``canvas``: images (canvases) per second of the real
`gpjax.tasks.classification.train_step` / `eval_step` (under ``jax.shard_map`` over the
``data`` axis and ``jax.jit``, the train step with the state donated, as in
`gpjax.trainer.train_and_evaluate`) and of `gpjax.data.canvas.canvas_batch`, for
each batch x dtype, on synthetic uint8 32x32x3 sources already on the device (no
data set; the step's config is configs/location.py's, so ml-collections is needed, but
no tensorflow-datasets, scikit-learn or tensorboardX is imported). Medians over ``--steps`` timed
steps after ``--warmup``, each step synchronised with ``block_until_ready``;
FLOPs per step from XLA's cost analysis of the compiled step (per device),
TFLOP/s, peak device memory where the backend reports it, and on GPU the rate of
a bf16 8192^3 matmul measured in the same run and the step's share of it:

  python -m gpjax.bench train --batch 48,256,1024 --dtype float32,bfloat16 --out train.json
  python -m gpjax.bench eval --batch 256,1024 --head permutenet
  python -m gpjax.bench canvas --batch 1024 --grid 3

Each subcommand is an ``_add_NAME(subparsers)`` that declares its flags and a
``bench_NAME(args) -> record`` that measures; `main` prints and saves the record.
"""

import argparse
import datetime
import functools
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from configs import location
from gpjax import parallel, trainer
from gpjax.data import canvas
from gpjax.models.classifier import BACKBONES, Classifier
from gpjax.probes import permutation
from gpjax.tasks import classification


def _first_call(fn: Callable[[], Any]) -> tuple[float, Any]:
  """Seconds of the first (compiling) call of ``fn``, and its result."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return time.perf_counter() - start, out


def _times(fn: Callable[[], Any], repeats: int) -> list[float]:
  """Wall-clock seconds of ``repeats`` calls of ``fn``, each synchronised."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


def _environment(argv: list[str]) -> dict[str, Any]:
  return {'command': ' '.join(['python -m gpjax.bench'] + argv),
          'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
          'device_kind': jax.devices()[0].device_kind, 'platform': jax.devices()[0].platform,
          'num_devices': jax.device_count(), 'jax_version': jax.__version__,
          'flax_version': flax.__version__,
          'load_average_1min_at_start': os.getloadavg()[0]}  # Other processes skew CPU timings.


def _add_probe(subparsers) -> None:
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
  p.add_argument('--image-chunk', type=int, default=0,
                 help='images per device at once; 0 = all at layer 5, 2500 at layers 1-4')
  p.add_argument('--official-orderings', type=int, default=3,
                 help='orderings timed the official way (its K time is extrapolated)')
  p.add_argument('--official-batch', type=int, default=1000,
                 help='images per jitted forward in the official loop')
  p.add_argument('--repeats', type=int, default=5,
                 help='timed rounds, each one probe call and one official ordering (medians)')
  p.add_argument('--warmup', type=int, default=1, help='untimed calls after compiling')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='', help='write the JSON record to this file')


def bench_probe(args: argparse.Namespace) -> dict[str, Any]:
  """Times the probe and the official loop on the same model, canvases and orderings (one
  function: both timings must share every input built here)."""
  if args.orderings < 1 or args.images < 1 or args.official_orderings < 1:
    raise SystemExit('--orderings, --images and --official-orderings must be >= 1.')
  chunk = args.ordering_chunk or (args.orderings if args.layer == 5 else 8)
  image_chunk = args.image_chunk or (args.images if args.layer == 5 else 2500)
  image_chunk = min(image_chunk, -(-args.images // jax.device_count()))  # As used: per device.
  num_cells, size = args.grid ** 2, 32 * args.grid
  model = Classifier(num_classes=num_cells, backbone=args.backbone, head='permutenet',
                     width=args.width, permute_layer=args.layer, dtype=jnp.dtype(args.dtype))
  mesh = jax.make_mesh((jax.device_count(),), (parallel.DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Explicit,))
  replicated = parallel.replicated(mesh)
  k_init, k_images, k_cells = jax.random.split(jax.random.key(args.seed), 3)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, size, size, 3)), train=False),
                      out_shardings=replicated)(k_init)
  images = jax.random.normal(k_images, (args.images, size, size, 3), jnp.float32)
  cells = jax.random.randint(k_cells, (args.images,), 0, num_cells, jnp.int32)
  orderings = permutation.random_orderings(args.seed, args.orderings, model.ordering_length())
  device_orderings = jax.device_put(orderings, replicated)

  fn = permutation.make_probe(model, layer=args.layer, num_cells=num_cells, ordering_chunk=chunk,
                              image_chunk=image_chunk, mesh=mesh)
  batch = permutation.shard_batch(mesh, images, cells, cells)  # Location task: label = cell.
  probe_call = lambda: fn(variables, batch, device_orderings)

  # The official way: per ordering, a full forward over every batch of the test set,
  # data parallel over the devices like the probe.
  def forward_correct(variables, batch, p):
    logits, _ = model.apply(variables, batch['image'], train=False, ordering=p)
    hits = (jnp.argmax(logits, -1) == batch['label']) & batch['mask']
    return jax.lax.psum(hits.sum(), parallel.DATA_AXIS)

  forward_correct = jax.jit(jax.shard_map(
      forward_correct, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS), P()), out_specs=P()))
  b = args.official_batch
  batches = [permutation.shard_batch(mesh, images[i:i + b], cells[i:i + b], cells[i:i + b])
             for i in range(0, args.images, b)]
  rows = [device_orderings[i] for i in range(min(args.official_orderings, args.orderings))]

  def official(p):
    return sum(forward_correct(variables, batch, p) for batch in batches)

  probe_compile, sums = _first_call(probe_call)
  official_compile, identity_correct = _first_call(lambda: official(rows[0]))
  probe_accuracy = permutation.summarize(*jax.device_get((sums['correct'], sums['count'])))
  _times(probe_call, args.warmup)
  _times(lambda: official(rows[0]), args.warmup)
  # Interleaved rounds, so that load from other processes hits both alike; the
  # official way runs one ordering per round, cycling through `rows`.
  probe_times, official_times = [], []
  for i in range(max(args.repeats, len(rows))):
    probe_times += _times(probe_call, 1)
    official_times += _times(lambda: official(rows[i % len(rows)]), 1)

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
  }
  settings = dict(vars(args), ordering_chunk=chunk, image_chunk=image_chunk, head='permutenet',
                  image_size=size, num_channels=int(orderings.shape[1]))
  settings.pop('command', None)
  return {'settings': settings, 'results': results}


def _print_probe(record: dict[str, Any]) -> None:
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


# --- train / eval / canvas: the training code path on synthetic sources ------------------------

SOURCE_SHAPE = (32, 32, 3)  # CIFAR-sized uint8 sources; canvases are (32g, 32g, 3).
MATMUL_SIZE_GPU = 8192


class _SyntheticInfo:
  """What `train_step` and `eval_step` read of a `DatasetInfo`: CIFAR-10's statistics."""
  name = 'synthetic'
  mean = (0.4914, 0.4822, 0.4465)
  std = (0.2023, 0.1994, 0.2010)


def _step_config(args: argparse.Namespace, batch: int, dtype: str) -> ml_collections.ConfigDict:
  """configs/location.py (Adam 1e-3, zero padding, flips, zero background) at the
  benchmark's grid, model, dtype and batch."""
  config = location.get_config()
  config.seed = args.seed
  config.data.grid = args.grid
  config.model.backbone, config.model.head = args.backbone, args.head
  config.model.width, config.model.dtype = args.width, dtype
  config.train.batch_size = config.eval.batch_size = batch
  return config


def _source_batch(mesh, batch: int, seed: int, *, mask: bool) -> dict[str, jax.Array]:
  """Random uint8 sources with labels, global indices (and a mask), sharded over ``data``."""
  rng = np.random.default_rng(seed)
  host = {'image': rng.integers(0, 256, (batch, *SOURCE_SHAPE), dtype=np.uint8),
          'label': rng.integers(0, 10, (batch,), dtype=np.int32),
          'index': np.arange(batch, dtype=np.int32)}
  if mask:
    host['mask'] = np.ones((batch,), dtype=bool)
  return jax.device_put(host, parallel.data_sharded(mesh))


def _flops(compiled) -> float:
  """FLOPs of one call from XLA's cost analysis (per device; 0 if not reported)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per partition.
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))


def _peak_memory_bytes() -> int | None:
  """The device's peak bytes in use so far in this process (None where unreported, as on
  CPU): it never goes down, so later rows of one run include earlier rows' peaks."""
  stats = jax.devices()[0].memory_stats()
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def _compiled_memory_bytes(compiled) -> int | None:
  """XLA's buffer assignment of one call, per device: arguments + outputs + temporaries
  - donated aliases (this step alone, unlike `_peak_memory_bytes`)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # Not every backend implements it.  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes -
             m.alias_size_in_bytes)


def _matmul_tflops(size: int, repeats: int) -> float | None:
  """Measured bf16 TFLOP/s of a size^3 matmul (the reference rate), or None if size is 0."""
  if size <= 0:
    return None
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (size, size), jnp.bfloat16)
  b = jax.random.normal(kb, (size, size), jnp.bfloat16)
  matmul = jax.jit(jnp.matmul)
  _first_call(lambda: matmul(a, b))
  seconds = statistics.median(_times(lambda: matmul(a, b), repeats))
  return 2 * size ** 3 / seconds / 1e12


def _csv(kind):
  return lambda text: [kind(v) for v in text.split(',') if v]


def _add_step_flags(p, *, dtype: bool = True, model: bool = True) -> None:
  p.add_argument('--batch', type=_csv(int), default=[48, 256, 1024],
                 help='global batch sizes, comma separated')
  if dtype:
    p.add_argument('--dtype', type=_csv(str), default=['float32', 'bfloat16'],
                   help='compute dtypes (params stay float32), comma separated')
  if model:
    p.add_argument('--width', type=int, default=64, help='channels of stage 1 (paper: 64)')
    p.add_argument('--head', default='gapnet', choices=('gapnet', 'permutenet'))
    p.add_argument('--backbone', default='resnet18', choices=tuple(BACKBONES))
  p.add_argument('--grid', type=int, default=3, help='g: canvases of 32g x 32g, g*g classes')
  p.add_argument('--steps', type=int, default=30, help='timed steps (median)')
  p.add_argument('--warmup', type=int, default=5, help='untimed steps after compiling')
  p.add_argument('--matmul-size', type=int, default=-1,
                 help='n of the bf16 n^3 reference matmul; -1 = 8192 on GPU, none elsewhere; '
                 '0 = none')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='', help='write the JSON record to this file')


def _add_train(subparsers) -> None:
  _add_step_flags(subparsers.add_parser(
      'train', help='images/s of the classification train_step (shard_map + jit, donated state)'))


def _add_eval(subparsers) -> None:
  _add_step_flags(subparsers.add_parser('eval', help='images/s of the classification eval_step'))


def _add_canvas(subparsers) -> None:
  _add_step_flags(subparsers.add_parser(
      'canvas', help='canvases/s of gpjax.data.canvas.canvas_batch on the device'),
      dtype=False, model=False)


def _check_step_args(args: argparse.Namespace) -> None:
  if args.steps < 1 or args.warmup < 0 or not args.batch or min(args.batch) < 1:
    raise SystemExit('--steps and every --batch must be >= 1, --warmup >= 0.')
  for dtype in getattr(args, 'dtype', []):
    if dtype not in ('float32', 'bfloat16'):
      raise SystemExit(f'--dtype {dtype!r}: choose float32 and/or bfloat16.')
  for b in args.batch:
    if b % jax.device_count():
      raise SystemExit(f'--batch {b} must be divisible by the {jax.device_count()} devices.')


def _time_step(compiled, state, batch, args, *, carries_state: bool) -> list[float]:
  """Per-step seconds of ``args.steps`` synchronised calls after ``args.warmup`` calls.

  With ``carries_state`` the step returns (state, metrics) and the (donated) state is
  fed back, as in the training loop."""
  times = []
  for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    out = compiled(state, batch)
    if carries_state:
      state = out[0]
    jax.block_until_ready(out)
    if i >= args.warmup:
      times.append(time.perf_counter() - start)
  return times


def _row(batch: int, times: list[float], compiled, compile_s: float,
         matmul_tflops: float | None, **extra) -> dict[str, Any]:
  flops = _flops(compiled)
  seconds = statistics.median(times)
  tflops = flops * jax.device_count() / seconds / 1e12  # flops are per device.
  return {'batch': batch, **extra, 'seconds_per_step': seconds,
          'seconds_per_step_all': times, 'images_per_s': batch / seconds,
          'flops_per_step_per_device': flops,
          'flops_per_image': flops * jax.device_count() / batch, 'tflops_per_s': tflops,
          'utilisation_of_matmul_rate': (tflops / (matmul_tflops * jax.device_count())
                                         if matmul_tflops else None),
          'compile_seconds': compile_s,
          'compiled_memory_bytes_per_device': _compiled_memory_bytes(compiled),
          'device_peak_memory_bytes_so_far': _peak_memory_bytes()}


def _matmul_size(args: argparse.Namespace) -> int:
  if args.matmul_size >= 0:
    return args.matmul_size
  return MATMUL_SIZE_GPU if jax.devices()[0].platform == 'gpu' else 0


def _bench_steps(args: argparse.Namespace, which: str) -> dict[str, Any]:
  """Shared body of ``train`` and ``eval``: one compiled step per batch x dtype."""
  _check_step_args(args)
  mesh = parallel.make_mesh()
  info = _SyntheticInfo()
  canvas_shape = (32 * args.grid, 32 * args.grid, 3)
  matmul_size = _matmul_size(args)
  matmul_tflops = _matmul_tflops(matmul_size, max(3, min(args.steps, 10)))
  rows = []
  for dtype in args.dtype:
    for b in args.batch:
      config = _step_config(args, b, dtype)
      model = classification.create_model(config, args.grid ** 2)
      tx = trainer.create_optimizer(config.train, config.train.steps)
      state = trainer.init_state(args.seed, model, tx, canvas_shape, mesh)
      batch = _source_batch(mesh, b, args.seed, mask=which == 'eval')
      if which == 'train':
        step = parallel.shard_step(functools.partial(classification.train_step, model=model,
                                                     tx=tx, config=config, info=info), mesh,
                                   outputs=2, donate=True)
      else:
        step = parallel.shard_step(functools.partial(classification.eval_step, model=model,
                                                     config=config, info=info), mesh)
      start = time.perf_counter()
      compiled = step.lower(state, batch).compile()
      compile_s = time.perf_counter() - start
      times = _time_step(compiled, state, batch, args, carries_state=which == 'train')
      rows.append(_row(b, times, compiled, compile_s, matmul_tflops, dtype=dtype))
      del state, compiled
  settings = dict(vars(args), image_size=32 * args.grid, matmul_size=matmul_size,
                  source='synthetic uint8 32x32x3 on the device', optimizer='adam')
  settings.pop('command', None)
  return {'settings': settings, 'matmul_bf16_tflops_per_s': matmul_tflops, 'results': rows}


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
  """Times `classification.train_step` (forward + backward + Adam, canvases made in the step)."""
  return _bench_steps(args, 'train')


def bench_eval(args: argparse.Namespace) -> dict[str, Any]:
  """Times `classification.eval_step` (canvases + forward + summed metrics)."""
  return _bench_steps(args, 'eval')


def bench_canvas(args: argparse.Namespace) -> dict[str, Any]:
  """Times `canvas.canvas_batch` (flip, zero background), keyed per example as in training."""
  _check_step_args(args)
  mesh = parallel.make_mesh()
  info = _SyntheticInfo()
  matmul_size = _matmul_size(args)
  matmul_tflops = _matmul_tflops(matmul_size, max(3, min(args.steps, 10)))

  def make(key, batch):
    keys = jax.vmap(functools.partial(jax.random.fold_in, key))(batch['index'])
    return canvas.canvas_batch(keys, batch['image'], grid=args.grid, mean=info.mean,
                               std=info.std, background='zero', flip=True)

  step = jax.jit(jax.shard_map(make, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
                               out_specs=P(parallel.DATA_AXIS)))
  key = jax.device_put(jax.random.key(args.seed), parallel.replicated(mesh))
  rows = []
  for b in args.batch:
    batch = _source_batch(mesh, b, args.seed, mask=False)
    start = time.perf_counter()
    compiled = step.lower(key, batch).compile()
    compile_s = time.perf_counter() - start
    times = _time_step(compiled, key, batch, args, carries_state=False)
    rows.append(_row(b, times, compiled, compile_s, matmul_tflops, dtype='float32'))
  settings = dict(vars(args), image_size=32 * args.grid, matmul_size=matmul_size,
                  background='zero', flip=True, source='synthetic uint8 32x32x3 on the device')
  settings.pop('command', None)
  return {'settings': settings, 'matmul_bf16_tflops_per_s': matmul_tflops, 'results': rows}


def _print_steps(record: dict[str, Any]) -> None:
  s = record['settings']
  unit = 'canvases/s' if record['benchmark'] == 'canvas' else 'images/s'
  model = ('' if record['benchmark'] == 'canvas' else
           f"{s['backbone']} {s['head']} width {s['width']}, ")
  print(f"{record['benchmark']}: {s['image_size']}x{s['image_size']} canvases, {model}"
        f"{record['device_kind']} x{record['num_devices']}, jax {record['jax_version']}")
  if record['matmul_bf16_tflops_per_s']:
    print(f"bf16 {s['matmul_size']}^3 matmul: {record['matmul_bf16_tflops_per_s']:.1f} TFLOP/s")
  print(f"{'dtype':<9} {'batch':>6} {unit:>12} {'ms/step':>9} {'GFLOP/img':>10} "
        f"{'TFLOP/s':>8} {'util':>6} {'mem MiB':>9}")
  for r in record['results']:
    util = r['utilisation_of_matmul_rate']
    mem = r['device_peak_memory_bytes_so_far'] or r['compiled_memory_bytes_per_device']
    print(f"{r['dtype']:<9} {r['batch']:>6} {r['images_per_s']:>12.1f} "
          f"{1e3 * r['seconds_per_step']:>9.2f} {r['flops_per_image'] / 1e9:>10.3f} "
          f"{r['tflops_per_s']:>8.3f} {'-' if util is None else f'{100 * util:.1f}%':>6} "
          f"{'-' if mem is None else f'{mem / 2 ** 20:.0f}':>9}")
  print('mem: the device peak so far where reported (GPU), else XLA\'s buffers for one step.')


BENCHMARKS = {'probe': (bench_probe, _print_probe), 'train': (bench_train, _print_steps),
              'eval': (bench_eval, _print_steps), 'canvas': (bench_canvas, _print_steps)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(prog='python -m gpjax.bench', description=__doc__.split('\n')[0])
  subparsers = parser.add_subparsers(dest='command', required=True)
  for add in (_add_probe, _add_train, _add_eval, _add_canvas):
    add(subparsers)
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parser.parse_args(argv)
  bench, show = BENCHMARKS[args.command]
  record = {'benchmark': args.command, **_environment(argv), **bench(args)}
  show(record)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(record, f, indent=2)
    print(f'wrote {args.out}')
  return record


if __name__ == '__main__':
  main()
