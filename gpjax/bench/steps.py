r"""The train / eval / canvas benchmarks: the training code path on synthetic sources.

  python -m gpjax.bench train --batch 48,256,1024 --dtype float32,bfloat16 --out train.json
  python -m gpjax.bench eval --batch 256,1024 --head permutenet
  python -m gpjax.bench canvas --batch 1024 --grid 3

Images (canvases) per second of the real
`gpjax.tasks.classification.train_step` / `eval_step` (under ``jax.shard_map`` over the
``data`` axis and ``jax.jit``, the train step with the state donated, as in
`gpjax.core.trainer.train_and_evaluate`) and of `gpjax.data.canvas.canvas_batch`, for
each batch x dtype, on synthetic uint8 sources (32x32x3 unless ``--source-size``) already on
the device (no
data set; the step's config is configs/location.py's, so ml-collections is needed, but
no tensorflow-datasets, scikit-learn or tensorboardX is imported). Medians over ``--steps`` timed
steps after ``--warmup``, each step synchronised with ``block_until_ready``;
FLOPs per step from XLA's cost analysis of the compiled step (per device),
TFLOP/s, peak device memory where the backend reports it, and on GPU the rate of
a bf16 8192^3 matmul measured in the same run and the step's share of it.
"""

import argparse
import functools
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from configs import location
from gpjax.core import parallel
from gpjax.core import trainer
from gpjax.bench import measure
from gpjax.data import canvas
from gpjax.models.classifier import BACKBONES
from gpjax.tasks import classification

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


def host_sources(batch: int, seed: int, size: int = SOURCE_SHAPE[0], *, mask: bool = False
                 ) -> dict[str, np.ndarray]:
  """A host batch of random uint8 sources (size x size x 3) with labels, global indices (and
  a mask)."""
  rng = np.random.default_rng(seed)
  host = {'image': rng.integers(0, 256, (batch, size, size, SOURCE_SHAPE[2]), dtype=np.uint8),
          'label': rng.integers(0, 10, (batch,), dtype=np.int32),
          'index': np.arange(batch, dtype=np.int32)}
  if mask:
    host['mask'] = np.ones((batch,), dtype=bool)
  return host


def _source_batch(mesh, batch: int, seed: int, *, mask: bool, size: int) -> dict[str, jax.Array]:
  """`host_sources` sharded over ``data``."""
  return jax.device_put(host_sources(batch, seed, size, mask=mask), parallel.data_sharded(mesh))


def _matmul_tflops(size: int, repeats: int) -> float | None:
  """Measured bf16 TFLOP/s of a size^3 matmul (the reference rate), or None if size is 0."""
  if size <= 0:
    return None
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (size, size), jnp.bfloat16)
  b = jax.random.normal(kb, (size, size), jnp.bfloat16)
  matmul = jax.jit(jnp.matmul)
  measure.first_call(lambda: matmul(a, b))
  seconds = statistics.median(measure.times(lambda: matmul(a, b), repeats))
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
  p.add_argument('--grid', type=int, default=3, help='g: g*g classes, canvases g sources wide')
  p.add_argument('--source-size', type=int, default=SOURCE_SHAPE[0],
                 help='side of the sources (CIFAR: 32; CPU study: 16)')
  p.add_argument('--steps', type=int, default=30, help='timed steps (median)')
  p.add_argument('--warmup', type=int, default=5, help='untimed steps after compiling')
  p.add_argument('--matmul-size', type=int, default=-1,
                 help='n of the bf16 n^3 reference matmul; -1 = 8192 on GPU, none elsewhere; '
                 '0 = none')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='', help='write the JSON record to this file')


def add_train(subparsers) -> None:
  _add_step_flags(subparsers.add_parser(
      'train', help='images/s of the classification train_step (shard_map + jit, donated state)'))


def add_eval(subparsers) -> None:
  _add_step_flags(subparsers.add_parser('eval', help='images/s of the classification eval_step'))


def add_canvas(subparsers) -> None:
  _add_step_flags(subparsers.add_parser(
      'canvas', help='canvases/s of gpjax.data.canvas.canvas_batch on the device'),
      dtype=False, model=False)


def _check_step_args(args: argparse.Namespace) -> None:
  if (args.steps < 1 or args.warmup < 0 or not args.batch or min(args.batch) < 1
      or args.source_size < 1):
    raise SystemExit('--steps, --source-size and every --batch must be >= 1, --warmup >= 0.')
  for dtype in getattr(args, 'dtype', []):
    if dtype not in ('float32', 'bfloat16'):
      raise SystemExit(f'--dtype {dtype!r}: choose float32 and/or bfloat16.')
  for b in args.batch:
    if b % jax.device_count():
      raise SystemExit(f'--batch {b} must be divisible by the {jax.device_count()} devices.')


def _time_step(compiled, state, batch, args, *, carries_state: bool) -> tuple[list[float], Any]:
  """Per-step seconds of ``args.steps`` synchronised calls after ``args.warmup`` calls, and
  the last call's output.

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
  return times, out


def _row(batch: int, times: list[float], compiled, compile_s: float,
         matmul_tflops: float | None, **extra) -> dict[str, Any]:
  flops = measure.flops(compiled)
  seconds = statistics.median(times)
  tflops = flops * jax.device_count() / seconds / 1e12  # flops are per device.
  return {'batch': batch, **extra, 'seconds_per_step': seconds,
          'seconds_per_step_all': times, 'images_per_s': batch / seconds,
          'flops_per_step_per_device': flops,
          'flops_per_image': flops * jax.device_count() / batch, 'tflops_per_s': tflops,
          'utilisation_of_matmul_rate': (tflops / (matmul_tflops * jax.device_count())
                                         if matmul_tflops else None),
          'compile_seconds': compile_s,
          'compiled_memory_bytes_per_device': measure.compiled_memory_bytes(compiled),
          'device_peak_memory_bytes_so_far': measure.peak_memory_bytes()}


def _matmul_size(args: argparse.Namespace) -> int:
  if args.matmul_size >= 0:
    return args.matmul_size
  return MATMUL_SIZE_GPU if jax.devices()[0].platform == 'gpu' else 0


def _bench_steps(args: argparse.Namespace, which: str) -> dict[str, Any]:
  """Shared body of ``train`` and ``eval``: one compiled step per batch x dtype."""
  _check_step_args(args)
  mesh = parallel.make_mesh()
  info = _SyntheticInfo()
  side = args.source_size * args.grid
  canvas_shape = (side, side, 3)
  matmul_size = _matmul_size(args)
  matmul_tflops = _matmul_tflops(matmul_size, max(3, min(args.steps, 10)))
  rows = []
  for dtype in args.dtype:
    for b in args.batch:
      config = _step_config(args, b, dtype)
      model = classification.create_model(config, args.grid ** 2)
      tx = trainer.create_optimizer(config.train, config.train.steps)
      state = trainer.init_state(args.seed, model, tx, canvas_shape, mesh)
      batch = _source_batch(mesh, b, args.seed, mask=which == 'eval', size=args.source_size)
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
      times, out = _time_step(compiled, state, batch, args, carries_state=which == 'train')
      extra = {'final_loss': float(out[1]['loss'])} if which == 'train' else {}
      rows.append(_row(b, times, compiled, compile_s, matmul_tflops, dtype=dtype, **extra))
      del state, compiled
  settings = dict(vars(args), image_size=side, matmul_size=matmul_size, optimizer='adam',
                  source=f'synthetic uint8 {args.source_size}x{args.source_size}x3 on the device')
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
    batch = _source_batch(mesh, b, args.seed, mask=False, size=args.source_size)
    start = time.perf_counter()
    compiled = step.lower(key, batch).compile()
    compile_s = time.perf_counter() - start
    times, _ = _time_step(compiled, key, batch, args, carries_state=False)
    rows.append(_row(b, times, compiled, compile_s, matmul_tflops, dtype='float32'))
  settings = dict(vars(args), image_size=args.source_size * args.grid, matmul_size=matmul_size,
                  background='zero', flip=True,
                  source=f'synthetic uint8 {args.source_size}x{args.source_size}x3 on the device')
  settings.pop('command', None)
  return {'settings': settings, 'matmul_bf16_tflops_per_s': matmul_tflops, 'results': rows}


def print_steps(record: dict[str, Any]) -> None:
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
