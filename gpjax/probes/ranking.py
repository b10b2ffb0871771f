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
`evaluate` ranks a segmentation model's last backbone map; the job ``rank``
(configs/attack.py:rank, `gpjax.probes.attack.run_rank`) writes it to ``ranking.json``.
"""

import functools
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from gpjax import parallel
from gpjax.data import batching, canvas, segmentation

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


def evaluate(config: Any, model: Any, variables: Any, data: Any) -> dict[str, Any]:
  """Rankings of a segmentation model's ``stage4`` channels over ``config.probe``'s images
  of ``data`` = (source, SegInfo); see `gpjax.probes.attack.load`."""
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
