r"""Ranking the channels of a feature map by how much position they encode (the paper's
"cheap way" to find position channels; official: main_rank_neurons.py).

For each image x and a layer whose output is a map (h, w, C): z = GAP of the map
of x and z_flip = GAP of the map of x flipped left-right, both (C,). Over the
data set:

- overall position channels: descending mean |z - z_flip|;
- region-specific channels: the signed mean of z - z_flip. A channel whose mean
  is large and positive responds more to the scenes as they are than mirrored,
  i.e. to what their layout puts on the left: the ``left`` ranking is the
  descending signed mean, the ``right`` ranking the ascending one.

Ties keep the lower channel index first. Images are batched, both orientations
go through one jitted call, and sums are ``psum``'d over the ``data`` mesh axis.
`rank_channels` ranks a segmentation model's last backbone map; the job ``rank``
(configs/attack.py:rank, `PROBE`) writes it to ``ranking.json``. `load`,
`eval_data` and `check` serve the attack (`gpjax.probes.attack`) too.
"""

import functools
import os
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from gpjax import checks
from gpjax.checks import DTYPES, at_least, one_of
from gpjax.core import parallel, writers
from gpjax.data import batching, canvas, segmentation
from gpjax.errors import ConfigError
from gpjax.interop import torch_import
from gpjax.probes import runner
from gpjax.tasks import runs

# feature_fn(variables, images (n, H, W, 3) float32) -> maps (n, h, w, C).
FeatureFn = Callable[[Any, jax.Array], jax.Array]
Sums = dict[str, jax.Array]


def flip_sums(feature_fn: FeatureFn, variables: Any, images: jax.Array,
              mask: jax.Array) -> Sums:
  """Summed |z - z_flip| and z - z_flip of one batch (jittable).

  Args:
    feature_fn: maps images to the (n, h, w, C) map to rank.
    variables: its variables.
    images: (n, H, W, 3) inputs of feature_fn.
    mask: (n,) bool, False for padding rows.

  Returns:
    ``{'abs': (C,), 'signed': (C,), 'count': ()}`` float32 sums over the unmasked images.
  """
  n = images.shape[0]
  maps = feature_fn(variables, jnp.concatenate([images, images[:, :, ::-1]]))
  z = jnp.mean(maps.astype(jnp.float32), axis=(1, 2))
  d = (z[:n] - z[n:]) * mask[:, None].astype(jnp.float32)
  return {'abs': jnp.abs(d).sum(0), 'signed': d.sum(0), 'count': mask.sum().astype(jnp.float32)}


def make_ranker(feature_fn: FeatureFn, mesh: jax.sharding.Mesh,
                prepare: Callable[[dict[str, jax.Array]], jax.Array] | None = None
                ) -> Callable[[Any, dict[str, jax.Array]], Sums]:
  """``fn(variables, batch) -> sums`` over all devices (jitted, batch sharded over ``data``).

  Args:
    feature_fn: as `flip_sums`.
    mesh: a mesh with a ``data`` axis.
    prepare: maps this device's shard of the batch to feature_fn's images (e.g.
      normalisation of uint8 images); by default ``batch['image']``. The batch
      needs a ``'mask'`` too.
  """
  prepare = prepare or (lambda b: b['image'])

  def local(variables, batch):
    return jax.lax.psum(flip_sums(feature_fn, variables, prepare(batch), batch['mask']),
                        parallel.DATA_AXIS)

  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
                               out_specs=P()))


def rankings(abs_sum: Any, signed_sum: Any, count: float) -> dict[str, Any]:
  """The three channel rankings from the sums.

  Returns:
    ``overall``, ``left``, ``right``: channel indices (C,) as lists, most
    position-encoding first; ``mean_abs_difference`` and
    ``mean_signed_difference`` (C,); ``num_images``.
  """
  mean_abs = np.asarray(abs_sum, np.float64) / max(float(count), 1.0)
  mean_signed = np.asarray(signed_sum, np.float64) / max(float(count), 1.0)
  return {'overall': np.argsort(-mean_abs, kind='stable').tolist(),
          'left': np.argsort(-mean_signed, kind='stable').tolist(),
          'right': np.argsort(mean_signed, kind='stable').tolist(),
          'mean_abs_difference': mean_abs.tolist(),
          'mean_signed_difference': mean_signed.tolist(), 'num_images': int(count)}


def rank(fn: Callable[[Any, dict], Sums], variables: Any, batches: Iterable[dict[str, Any]],
         to_device: Callable[[dict], dict] = lambda b: b) -> dict[str, Any]:
  """Sums `make_ranker`'s ``fn`` over ``batches`` and returns `rankings`."""
  totals = parallel.accumulate(lambda b: fn(variables, to_device(b)), batches)
  if totals is None:
    raise ValueError('No batches to rank channels on.')
  return rankings(totals['abs'], totals['signed'], totals['count'])


def parse_counts(counts: Any) -> list[int]:
  """``attack.counts``, the N of the attack, e.g. (0, 10, 25), as a list."""
  return checks.items('attack.counts', counts, int)


# The keys of `rank_channels`' output: what ranking.json holds.
RANKING_KEYS = ('overall', 'left', 'right', 'mean_abs_difference', 'mean_signed_difference',
                'num_images', 'layer', 'num_channels', 'dataset')


def rank_channels(config: Any, model: Any, variables: Any, data: Any) -> dict[str, Any]:
  """Rankings of a segmentation model's ``stage4`` channels over ``config.probe``'s images
  of ``data`` = (source, SegInfo) (`eval_data`)."""
  source, info = data
  mesh = parallel.make_mesh()
  p = config.probe
  parallel.check_divisible('config.probe.batch_size', p.batch_size, jax.device_count(), 'devices')
  fn = make_ranker(lambda v, x: model.apply(v, x, train=False)[1]['stage4'], mesh,
                   prepare=lambda b: canvas.normalize(b['image'], info.mean, info.std))
  batches = batching.eval_batches(source, p.batch_size, num_examples=p.num_examples,
                                  pad_label=segmentation.IGNORE_LABEL,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count())
  variables = jax.device_put(variables, parallel.replicated(mesh))
  out = rank(fn, variables, ({'image': b['image'], 'mask': b['mask']} for b in batches),
             functools.partial(parallel.to_global, mesh))
  out.update({'layer': 'stage4', 'num_channels': len(out['overall']), 'dataset': info.name})
  return out


def load(config: Any) -> runs.Run:
  """The ``config.source`` of a rank/attack config: a segment run or a PyTorch file."""
  return runs.load_source(config.source, config.probe.dtype)


def eval_data(config: Any, run: runs.Run) -> tuple[Any, Any]:
  """(evaluation source, SegInfo) of a rank/attack config: ``config.data``'s set, by default
  the source run's own."""
  source, model = run.config, run.model
  d = config.data
  src = None if source is None else source.data  # None for a PyTorch file.
  name = d.name or (src.name if src is not None else '')
  if not name:
    raise ConfigError('config.data.name is empty: name the evaluation set of the imported '
                      'checkpoint (e.g. cityscapes).')
  size = ((d.image_height, d.image_width) if d.image_height else
          (src.image_height, src.image_width) if src is not None and src.image_height else None)
  data_dir = d.data_dir or (src.data_dir if src is not None else '') or None
  data, info = segmentation.load_segmentation(name, d.split, data_dir=data_dir, image_size=size)
  if info.num_classes != model.num_classes:
    raise ConfigError(f'The model predicts {model.num_classes} classes but {name!r} has '
                      f'{info.num_classes}.')
  return data, info


def check(config: Any) -> None:
  """Raises ConfigError naming the first bad field of an ``attack``/``rank`` config."""
  s, p, a = config.source, config.probe, config.attack
  if bool(s.workdir) == bool(s.torch_checkpoint):
    raise ConfigError('Set exactly one of config.source.workdir (a trained segment run) and '
                      'config.source.torch_checkpoint (a PyTorch .pth).')
  path = s.workdir or s.torch_checkpoint
  if not os.path.exists(path):
    raise ConfigError(f'config.source: {path!r} does not exist.')
  if s.torch_checkpoint:
    torch_import.check_checkpoint_file('source.torch_checkpoint', s.torch_checkpoint)
  if s.workdir and not os.path.isfile(os.path.join(s.workdir, 'config.json')):
    raise ConfigError(f'config.source.workdir={s.workdir!r} holds no config.json: not a '
                      'segment workdir.')
  job = runs.read_config(s.workdir).job if s.workdir else 'segment'
  if job != 'segment':
    raise ConfigError(f'config.source.workdir={s.workdir!r} holds a {job!r} run; rank and attack '
                      'need a trained segment run (or a PyTorch .pth as '
                      'config.source.torch_checkpoint).')
  if p.ranking_file and not os.path.isfile(p.ranking_file):
    raise ConfigError(f'config.probe.ranking_file={p.ranking_file!r} does not exist.')
  if bool(config.data.image_height) != bool(config.data.image_width):
    raise ConfigError('config.data.image_height and image_width must both be 0 or both > 0.')
  for field in ('batch_size', 'mask_chunk'):
    at_least(f'probe.{field}', p[field], 1)
  at_least('probe.num_examples', p.num_examples, 0)
  at_least('source.step', s.step, 0)
  one_of('probe.dtype', p.dtype, DTYPES)
  if min(parse_counts(a.counts)) < 0:
    raise ConfigError(f'config.attack.counts={a.counts!r}: give a tuple of N >= 0.')
  at_least('attack.random_draws', a.random_draws, 0)
  at_least('attack.seed', a.seed, 0)


def evaluate(config: Any, run: runs.Run) -> dict[str, Any]:
  """`rank_channels` of a loaded run on ``config.data``'s set (`eval_data`)."""
  return rank_channels(config, run.model, run.variables, eval_data(config, run))


def report(config: Any, workdir: str, run: runs.Run, results: dict[str, Any]) -> None:
  """ranking.json: the rankings alone, reusable as an attack's ``probe.ranking_file``."""
  writers.write_json(os.path.join(workdir, 'ranking.json'),
                     {k: v for k, v in results.items() if k in RANKING_KEYS})


PROBE = runner.Probe(check=check, load=load, evaluate=evaluate, report=report)
JOBS = {'rank': runner.job(PROBE, "a segmentation run's position channels, ranked (flip test)")}
