r"""The train / eval / canvas benchmarks: the training code path on synthetic sources.

  python -m gpjax.bench --config=configs/bench/train.py --workdir=runs/bench/train
  python -m gpjax.bench --config=configs/bench/eval.py --workdir=runs/bench/eval \
      --config.batch=256,1024 --config.head=permutenet
  python -m gpjax.bench --config=configs/bench/canvas.py --workdir=runs/bench/canvas \
      --config.batch=1024

Images (canvases) per second of the real
`gpjax.tasks.classification.train_step` / `eval_step` (under ``jax.shard_map`` over the
``data`` axis and ``jax.jit``, the train step with the state donated, as in
`gpjax.core.trainer.train_and_evaluate`) and of `gpjax.data.canvas.canvas_batch`, for
each batch x dtype, on synthetic uint8 sources (``config.source_size`` square) already on
the device (no data set; the step's config is ``config.base``, configs/location.py's, so
ml-collections is needed, but no tensorflow-datasets, scikit-learn or tensorboardX is
imported). Medians over ``config.steps`` timed steps after ``config.warmup``, each step
synchronised with ``block_until_ready``; FLOPs per step from XLA's cost analysis of the
compiled step (per device), TFLOP/s, peak device memory where the backend reports it, and
on GPU the rate of a bf16 8192^3 matmul measured in the same run and the step's share of it.
"""

import copy
import functools
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from gpjax.core import parallel
from gpjax.core import trainer
from gpjax import checks
from gpjax.bench import fields, measure
from gpjax.data import canvas
from gpjax.models.classifier import BACKBONES
from gpjax.tasks import classification
from gpjax.errors import ConfigError
from gpjax.checks import at_least, one_of

SOURCE_SHAPE = (32, 32, 3)  # CIFAR-sized uint8 sources; canvases are (32g, 32g, 3).
MATMUL_SIZE_GPU = 8192


class _SyntheticInfo:
  """What `train_step` and `eval_step` read of a `DatasetInfo`: CIFAR-10's statistics."""
  name = 'synthetic'
  mean = (0.4914, 0.4822, 0.4465)
  std = (0.2023, 0.1994, 0.2010)


def _step_config(config: ml_collections.ConfigDict, batch: int,
                 dtype: str) -> ml_collections.ConfigDict:
  """A copy of ``config.base`` (configs/location.py: Adam 1e-3, zero padding, flips, zero
  background) at the benchmark's seed, grid, model, dtype and batch."""
  step = copy.deepcopy(config.base)
  step.seed = config.seed
  step.data.grid = config.grid
  step.model.backbone, step.model.head = config.backbone, config.head
  step.model.width, step.model.dtype = config.width, dtype
  step.train.batch_size = step.eval.batch_size = batch
  return step


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


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field, its value and what is allowed."""
  fields.each('batch', config.batch, at_least, 1)
  for name, low in (('grid', 1), ('source_size', 1), ('steps', 1), ('warmup', 0),
                    ('matmul_size', -1), ('seed', 0)):
    at_least(name, config[name], low)
  if config.bench == 'canvas':
    return
  fields.each('dtype', config.dtype, one_of, checks.DTYPES)
  at_least('width', config.width, 1)
  one_of('head', config.head, ('gapnet', 'permutenet'))
  one_of('backbone', config.backbone, BACKBONES)
  classification.check(_step_config(config, config.batch[0], config.dtype[0]))  # config.base.


def check_devices(field: str, batches: tuple[int, ...]) -> None:
  """Raises ConfigError unless every batch of ``config.<field>`` divides over the devices."""
  for b in batches:
    if b % jax.device_count():
      raise ConfigError(f'config.{field}={b} is not allowed; it must be divisible by the '
                        f'{jax.device_count()} devices.')


def _time_step(compiled, state, batch, config: ml_collections.ConfigDict, *,
               carries_state: bool) -> tuple[list[float], Any]:
  """Per-step seconds of ``config.steps`` synchronised calls after ``config.warmup`` calls, and
  the last call's output.

  With ``carries_state`` the step returns (state, metrics) and the (donated) state is
  fed back, as in the training loop."""
  times = []
  for i in range(config.warmup + config.steps):
    start = time.perf_counter()
    out = compiled(state, batch)
    if carries_state:
      state = out[0]
    jax.block_until_ready(out)
    if i >= config.warmup:
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


def _matmul_size(config: ml_collections.ConfigDict) -> int:
  if config.matmul_size >= 0:
    return config.matmul_size
  return MATMUL_SIZE_GPU if jax.devices()[0].platform == 'gpu' else 0


def _bench_steps(config: ml_collections.ConfigDict, which: str) -> dict[str, Any]:
  """Shared body of ``train`` and ``eval``: one compiled step per batch x dtype."""
  mesh = parallel.make_mesh()
  info = _SyntheticInfo()
  side = config.source_size * config.grid
  canvas_shape = (side, side, 3)
  matmul_size = _matmul_size(config)
  matmul_tflops = _matmul_tflops(matmul_size, max(3, min(config.steps, 10)))
  rows = []
  for dtype in config.dtype:
    for b in config.batch:
      step_config = _step_config(config, b, dtype)
      model = classification.create_model(step_config, config.grid ** 2)
      tx = trainer.create_optimizer(step_config.train, step_config.train.steps)
      state = trainer.init_state(config.seed, model, tx, canvas_shape, mesh)
      batch = _source_batch(mesh, b, config.seed, mask=which == 'eval', size=config.source_size)
      if which == 'train':
        step = parallel.shard_step(functools.partial(classification.train_step, model=model,
                                                     tx=tx, config=step_config, info=info),
                                   mesh, outputs=2, donate=True)
      else:
        step = parallel.shard_step(functools.partial(classification.eval_step, model=model,
                                                     config=step_config, info=info), mesh)
      start = time.perf_counter()
      compiled = step.lower(state, batch).compile()
      compile_s = time.perf_counter() - start
      times, out = _time_step(compiled, state, batch, config, carries_state=which == 'train')
      extra = {'final_loss': float(out[1]['loss'])} if which == 'train' else {}
      rows.append(_row(b, times, compiled, compile_s, matmul_tflops, dtype=dtype, **extra))
      del state, compiled
  settings = dict(fields.settings(config), image_size=side, matmul_size=matmul_size,
                  optimizer=config.base.train.optimizer,
                  source=f'synthetic uint8 {config.source_size}x{config.source_size}x3 on the '
                  'device')
  return {'settings': settings, 'matmul_bf16_tflops_per_s': matmul_tflops, 'results': rows}


def _bench_canvas(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Times `canvas.canvas_batch` (flip, zero background), keyed per example as in training."""
  mesh = parallel.make_mesh()
  info = _SyntheticInfo()
  matmul_size = _matmul_size(config)
  matmul_tflops = _matmul_tflops(matmul_size, max(3, min(config.steps, 10)))

  def make(key, batch):
    keys = jax.vmap(functools.partial(jax.random.fold_in, key))(batch['index'])
    return canvas.canvas_batch(keys, batch['image'], grid=config.grid, mean=info.mean,
                               std=info.std, background='zero', flip=True)

  step = jax.jit(jax.shard_map(make, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
                               out_specs=P(parallel.DATA_AXIS)))
  key = jax.device_put(jax.random.key(config.seed), parallel.replicated(mesh))
  rows = []
  for b in config.batch:
    batch = _source_batch(mesh, b, config.seed, mask=False, size=config.source_size)
    start = time.perf_counter()
    compiled = step.lower(key, batch).compile()
    compile_s = time.perf_counter() - start
    times, _ = _time_step(compiled, key, batch, config, carries_state=False)
    rows.append(_row(b, times, compiled, compile_s, matmul_tflops, dtype='float32'))
  settings = dict(fields.settings(config), image_size=config.source_size * config.grid,
                  matmul_size=matmul_size, background='zero', flip=True,
                  source=f'synthetic uint8 {config.source_size}x{config.source_size}x3 on the '
                  'device')
  return {'settings': settings, 'matmul_bf16_tflops_per_s': matmul_tflops, 'results': rows}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Times `classification.train_step` (``config.bench='train'``: forward + backward + Adam,
  canvases made in the step), `classification.eval_step` ('eval': canvases + forward +
  summed metrics) or `canvas.canvas_batch` ('canvas'); returns the record's body."""
  del workdir  # Nothing is kept but the record, which gpjax.bench writes there.
  check_devices('batch', config.batch)
  if config.bench == 'canvas':
    return _bench_canvas(config)
  return _bench_steps(config, config.bench)


def show(record: dict[str, Any]) -> None:
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
