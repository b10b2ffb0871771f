"""Channel orderings and the PermuteNet kernel: a classifier's outputs under K orderings of
the channels at one layer, in one call.

An ordering ``p`` (C,) at layer l in 1..4 replaces the input x of stage l by
``x[..., p]``; at layer 5 (heads with a Dense after GAP) the pooled vector z by
``z[..., p]``. The K orderings are data, a (K, C) int32 array with the identity
as row 0:

- layer 5: the backbone runs once. ``z[p] @ W = sum_j z[p_j] W_j = sum_i z_i
  W_{q_i}`` with ``q = argsort(p)``, so permuting z equals permuting the Dense
  kernel's rows by ``argsort(p)``: one matmul of the cached z (n, C) with K
  kernels (K, C, k), no per-ordering copy of any activation;
- layers 1-4: the network runs once up to the input of stage l (XLA drops the
  unused later stages), then the rest runs under ``vmap`` over orderings,
  ``ordering_chunk`` at a time (``lax.map``), each holding a copy of its maps.

Used by a PermuteNet's evaluation (`gpjax.tasks.classification`) and by the
permutation probe (`gpjax.probes.permutation`).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gpjax.models.classifier import PERMUTE_LAYERS, Classifier
from gpjax.models.resnet import STAGE_NAMES

Variables = dict[str, Any]
Sums = dict[str, jax.Array]


def ordering_rows(seed: int | jax.Array, num_orderings: int, num_channels: int) -> jax.Array:
  """int32 (K, C), jittable: row 0 the identity, row i ``permutation(fold_in(key(seed), i), C)``.

  Rows depend only on (seed, i), so a larger K keeps the first rows.
  """
  key = jax.random.key(seed)
  rows = jax.vmap(lambda i: jax.random.permutation(jax.random.fold_in(key, i), num_channels))(
      jnp.arange(num_orderings))
  return rows.at[0].set(jnp.arange(num_channels)).astype(jnp.int32)


def random_orderings(seed: int, num_orderings: int, num_channels: int) -> np.ndarray:
  """`ordering_rows` as host numpy; ValueError for ``num_orderings`` < 1."""
  if num_orderings < 1:
    raise ValueError(f'num_orderings={num_orderings!r} must be >= 1 (row 0 is the identity).')
  return np.array(ordering_rows(seed, num_orderings, num_channels), np.int32)


def check_orderings(orderings: Any, num_channels: int) -> np.ndarray:
  """The orderings as int32 (K, C) numpy; ValueError unless each row is a
  permutation of 0..C-1 and row 0 the identity."""
  values = np.asarray(orderings)
  if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] != num_channels:
    raise ValueError(f'orderings has shape {values.shape}; expected (K, {num_channels}) with '
                     f'K >= 1: one row of {num_channels} channel indices per ordering.')
  if not np.issubdtype(values.dtype, np.integer):
    raise ValueError(f'orderings must hold integer channel indices; got dtype {values.dtype}.')
  bad = np.flatnonzero((np.sort(values, axis=1) != np.arange(num_channels)).any(axis=1))
  if bad.size:
    raise ValueError(f'orderings row {bad[0]} is not a permutation of 0..{num_channels - 1} '
                     f'({bad.size} such rows): {np.array2string(values[bad[0]], threshold=12)}.')
  if not np.array_equal(values[0], np.arange(num_channels)):
    raise ValueError('orderings row 0 must be the identity (0, 1, ..., C-1): results report '
                     'it as the unpermuted model.')
  return values.astype(np.int32)


def probe_model(model: Classifier, layer: int) -> Classifier:
  """The model with ``permute_layer=layer`` and local BatchNorm; raises ValueError
  for a layer outside 1..5 or layer 5 on a GAPNet."""
  if layer not in PERMUTE_LAYERS:
    raise ValueError(f'layer={layer!r} is not supported; choose one of {PERMUTE_LAYERS}: the '
                     'input of stage 1..4, or 5 for the pooled vector.')
  if layer == 5 and model.head == 'gapnet':
    raise ValueError("layer 5 permutes the pooled vector before a Dense layer, but a GAPNet has "
                     "no Dense: its pooled vector IS the logits. Probe a layer in 1..4, or a "
                     "'permutenet'/'linear' model.")
  return model.clone(permute_layer=layer, bn_axis_name=None)


def _forward(model: Classifier, layer: int) -> tuple[Callable, Callable]:
  """``(prefix, per_ordering)`` of a probe at ``layer`` (model from `probe_model`).

  ``prefix(variables, images (n, H, W, 3)) -> z``: the part shared by all
  orderings, the pooled vector (n, C) at layer 5, else the input of stage l
  (n, h, w, C). ``per_ordering(variables, z, p (C,)) -> logits (n, k) float32``.
  """
  if layer == 5:
    def prefix(variables, images):
      return model.apply(variables, images, train=False)[1]['pooled']

    def per_ordering(variables, z, p):
      head = variables['params']['head']
      # Exactly nn.Dense(dtype) on z[..., p]; under vmap over p the kernels stack
      # to (k, C, m) and the product is one matmul (n, C) x (C, k * m).
      kernel = head['kernel'][jnp.argsort(p)].astype(model.dtype)
      logits = jnp.dot(z.astype(model.dtype), kernel) + head['bias'].astype(model.dtype)
      return logits.astype(jnp.float32)
  else:
    stage_input = STAGE_NAMES[layer - 1]  # 'stem' feeds stage 1, 'stage{l-1}' feeds stage l.

    def prefix(variables, images):
      return model.apply(variables, images, train=False)[1][stage_input]

    def per_ordering(variables, z, p):
      return model.apply(variables, z, train=False, ordering=p, start_layer=layer)[0]
  return prefix, per_ordering


def _split(arrays: tuple[jax.Array, ...], chunk: int) -> tuple[jax.Array, ...]:
  """Zero-pads axis 0 (n) to c * s and reshapes to (c, s, ...): c = ceil(n / chunk),
  s = ceil(n / c), so at most c - 1 padded rows."""
  n = arrays[0].shape[0]
  count = -(-n // max(1, min(chunk, n)))
  size = -(-n // count)
  pad = count * size - n
  return tuple(jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)).reshape(count, size, *a.shape[1:])
               for a in arrays)


def _over_chunks(model: Classifier, variables: Variables, images: jax.Array,
                 extras: tuple[jax.Array, ...], orderings: jax.Array, reduce: Callable, *,
                 layer: int, ordering_chunk: int, image_chunk: int) -> Any:
  """``reduce(logits (s, k), *extras_chunk)`` for every image chunk (shared part
  run once) and ordering (``ordering_chunk`` at a time); stacked (c, K, ...)."""
  prefix, per_ordering = _forward(probe_model(model, layer), layer)

  def image_chunk_fn(xs):
    z = prefix(variables, xs[0])
    return jax.lax.map(lambda p: reduce(per_ordering(variables, z, p), *xs[1:]), orderings,
                       batch_size=min(ordering_chunk, orderings.shape[0]))

  return jax.lax.map(image_chunk_fn, _split((images, *extras), image_chunk))


def probe_sums(model: Classifier, variables: Variables, images: jax.Array, labels: jax.Array,
               cells: jax.Array, mask: jax.Array, orderings: jax.Array, *, layer: int,
               num_cells: int, ordering_chunk: int, image_chunk: int) -> Sums:
  """Correct predictions per ordering and cell of one device's images (jittable).

  Args:
    model: the trained classifier (any ``permute_layer``); variables: its
      ``{'params', 'batch_stats'}``.
    images: normalised canvases (n, H, W, 3); labels: (n,) int targets.
    cells: (n,) int cell of each pasted image, row-major in 0..num_cells-1.
    mask: (n,) bool, False for padding rows.
    orderings: (K, C) int32, row i one ordering of the channels at ``layer``.
    layer: 1..4 for the input of that stage, 5 for the pooled vector.
    num_cells: g * g.
    ordering_chunk: orderings evaluated at once (the vmap width).
    image_chunk: images evaluated at once.

  Returns:
    ``{'correct': (K, num_cells) int32, 'loss': (K,) float32 summed cross-entropy,
    'count': (num_cells,) int32}``.
  """
  onehot = jax.nn.one_hot(cells, num_cells, dtype=jnp.float32) * mask[:, None]

  def reduce(logits, labels, onehot):  # Float sums of at most image_chunk ones: exact.
    correct = ((jnp.argmax(logits, -1) == labels).astype(jnp.float32) @ onehot)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels) @ onehot.sum(1)
    return correct.astype(jnp.int32), loss

  correct, loss = _over_chunks(model, variables, images, (labels, onehot), orderings, reduce,
                               layer=layer, ordering_chunk=ordering_chunk,
                               image_chunk=image_chunk)
  return {'correct': correct.sum(0), 'loss': loss.sum(0),
          'count': onehot.sum(0).astype(jnp.int32)}
