r"""Channel-permutation probes: a trained model's accuracy under K channel orderings.

An ordering ``p`` (C,) at layer l in 1..4 replaces the input x of stage l by
``x[..., p]``; at layer 5 (heads with a Dense after GAP) the pooled vector z by
``z[..., p]``. The K orderings are data, a (K, C) int32 array with the identity
as row 0, evaluated in one jitted call per batch of images:

- layer 5: the backbone runs once. ``z[p] @ W = sum_j z[p_j] W_j = sum_i z_i
  W_{q_i}`` with ``q = argsort(p)``, so permuting z equals permuting the Dense
  kernel's rows by ``argsort(p)``: one matmul of the cached z (n, C) with K
  kernels (K, C, k), no per-ordering copy of any activation;
- layers 1-4: the network runs once up to the input of stage l (XLA drops the
  unused later stages), then the rest runs under ``vmap`` over orderings,
  ``ordering_chunk`` at a time (``lax.map``), each holding a copy of its maps.

Images go ``image_chunk`` at a time per device, sharded over the ``data`` mesh
axis (``shard_map``, counts summed with ``psum``). `evaluate` probes a loaded run
(`gpjax.runs.load_run`); the job ``permutation_probe`` (configs/permutation_probe.py,
`run`) writes its ``results.json`` and a histogram.
"""

import itertools
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from gpjax import parallel, writers
from gpjax.models.classifier import PERMUTE_LAYERS, Classifier
from gpjax.models.resnet import STAGE_NAMES

# Only jax/flax here, so that gpjax.bench runs where tfds/ml_collections are not
# installed; the job imports the training stack when it runs.

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


def make_probe(model: Classifier, *, layer: int, num_cells: int, ordering_chunk: int,
               image_chunk: int, mesh: jax.sharding.Mesh,
               make_inputs: Callable | None = None) -> Callable[..., Sums]:
  """The jitted probe over all devices: ``fn(variables, batch, orderings) -> sums``.

  A call holds its whole ``batch`` and, per device, the activations of ``image_chunk``
  images (``ordering_chunk`` copies at layers 1-4): feed a test set in batches and sum the
  calls' outputs (`evaluate`, `gpjax.bench.probe`) for a memory that does not grow with it.

  Args:
    model, layer, num_cells, ordering_chunk, image_chunk: as `probe_sums`
      (``image_chunk`` counts images per device).
    mesh: a mesh with a ``data`` axis; ``batch`` is sharded over it,
      ``variables`` and ``orderings`` replicated.
    make_inputs: maps this device's shard of ``batch`` to ``(images, labels,
      cells, mask)``; by default ``batch`` holds them as 'image', 'label',
      'cell', 'mask'.

  Returns:
    A function giving `probe_sums`' output summed over all devices.
  """
  probe_model(model, layer)  # Fails here, not at trace time.
  make_inputs = make_inputs or (lambda b: (b['image'], b['label'], b['cell'], b['mask']))

  def local(variables, batch, orderings):
    sums = probe_sums(model, variables, *make_inputs(batch), orderings, layer=layer,
                      num_cells=num_cells, ordering_chunk=ordering_chunk,
                      image_chunk=image_chunk)
    return jax.lax.psum(sums, parallel.DATA_AXIS)

  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS), P()),
                               out_specs=P()))


def shard_batch(mesh: jax.sharding.Mesh, images: Any, labels: Any,
                cells: Any) -> dict[str, jax.Array]:
  """Host or device arrays (N, ...) -> a batch for `make_probe`, padded (mask False)
  to a multiple of the device count and sharded over ``data`` (one process)."""
  n, devices = len(images), mesh.devices.size
  pad = -n % devices
  batch = {'image': images, 'label': labels, 'cell': cells, 'mask': np.ones(n, bool)}
  batch = {k: jnp.pad(jnp.asarray(v), [(0, pad)] + [(0, 0)] * (np.ndim(v) - 1))
           for k, v in batch.items()}
  return jax.device_put(batch, parallel.data_sharded(mesh))


def summarize(correct: Any, count: Any) -> dict[str, Any]:
  """Accuracies from `probe_sums` totals; row 0 is the identity ordering.

  Args:
    correct: (K, num_cells) correct predictions per ordering and cell.
    count: (num_cells,) images per cell.

  Returns:
    ``accuracy_per_ordering`` (K,), ``per_location_accuracy_per_ordering`` (K,
    num_cells), the same for the identity, ``summary`` (mean/std/min/max over
    rows 1..K-1; None when K = 1) and ``num_images``.
  """
  correct, count = np.asarray(correct, np.float64), np.asarray(count, np.float64)
  accuracy = correct.sum(1) / max(count.sum(), 1.0)
  per_location = correct / np.maximum(count, 1.0)
  others = accuracy[1:]
  summary = {'num_orderings': int(others.size), 'mean': float(others.mean()),
             'std': float(others.std()), 'min': float(others.min()),
             'max': float(others.max())} if others.size else None
  return {'accuracy_identity': float(accuracy[0]),
          'per_location_accuracy_identity': per_location[0].tolist(),
          'accuracy_per_ordering': accuracy.tolist(),
          'per_location_accuracy_per_ordering': per_location.tolist(),
          'summary': summary, 'num_images': int(count.sum())}


# The job: python -m gpjax.main --config=configs/permutation_probe.py --workdir=OUT


def validate_config(config: Any) -> None:
  """Raises ConfigError with one line naming the first bad ``config.probe`` field."""
  from gpjax.validate import DTYPES, ConfigError, at_least, one_of
  p = config.probe
  one_of('probe.layer', p.layer, PERMUTE_LAYERS)
  at_least('probe.num_orderings', p.num_orderings, 1)
  for field in ('seed', 'num_images'):
    at_least(f'probe.{field}', p[field], 0)
  for field in ('batch_size', 'image_chunk', 'ordering_chunk', 'head_chunk'):
    at_least(f'probe.{field}', p[field], 1)
  one_of('probe.dtype', p.dtype, DTYPES)
  src = p.source_workdir
  if not src:
    raise ConfigError('config.probe.source_workdir is empty: set it to the workdir of a trained '
                      'run (--config.probe.source_workdir=DIR).')
  if not os.path.isdir(src):
    raise ConfigError(f'config.probe.source_workdir={src!r} does not exist.')
  if not os.path.isfile(os.path.join(src, 'config.json')):
    raise ConfigError(f'config.probe.source_workdir={src!r} holds no config.json: it is not a '
                      'gpjax training workdir.')
  if not os.path.isdir(os.path.join(src, 'checkpoints')):
    raise ConfigError(f'config.probe.source_workdir={src!r} holds no checkpoints/ folder: train '
                      'a model there first.')
  head = writers.read_json(os.path.join(src, 'config.json'))['model']['head']
  if p.layer == 5 and head == 'gapnet':
    raise ConfigError(f'config.probe.layer=5 permutes the pooled vector before a Dense layer, but '
                      f'the model in {src!r} is a GAPNet, whose pooled vector is its logits: '
                      'choose a layer in 1..4.')


def evaluate(config: Any, source: Any, model: Classifier, variables: Variables,
             info: Any) -> dict[str, Any]:
  """`summarize`'s accuracies of a loaded run (`gpjax.runs.load_run`) under
  ``config.probe``'s orderings, on the run's own test canvases (those of its
  evaluations: keys from its ``eval.seed`` and each example's index)."""
  from gpjax.data import batching, examples, input_pipeline
  p = config.probe
  model = probe_model(model, p.layer)
  test_src, _ = input_pipeline.load_source(source.data.name, info.data.eval_split,
                                           data_dir=info.data_dir,
                                           image_size=source.data.image_size or None)
  orderings = random_orderings(p.seed, p.num_orderings, model.ordering_length())
  mesh = parallel.make_mesh()
  parallel.check_divisible('config.probe.batch_size', p.batch_size, jax.device_count(), 'devices')

  def make_inputs(batch):  # The canvases of the classification eval_step.
    images, labels, cells = examples.eval_examples(batch, source, info.data)
    return images, labels, cells, batch['mask']

  fn = make_probe(model, layer=p.layer, num_cells=source.data.grid ** 2,
                  ordering_chunk=p.head_chunk if p.layer == 5 else p.ordering_chunk,
                  image_chunk=p.image_chunk, mesh=mesh, make_inputs=make_inputs)
  replicated = parallel.replicated(mesh)
  variables = jax.device_put(variables, replicated)
  device_orderings = jax.device_put(orderings, replicated)
  num_images = min(p.num_images or len(test_src), len(test_src))
  batches = batching.eval_batches(test_src, p.batch_size, process_index=jax.process_index(),
                                  process_count=jax.process_count())

  def step(batch):
    batch['mask'] &= batch['index'] < num_images  # Global positions: the same on every host.
    return fn(variables, parallel.to_global(mesh, batch), device_orderings)

  totals = parallel.accumulate(step, itertools.islice(batches, -(-num_images // p.batch_size)))
  results = summarize(totals['correct'], totals['count'])
  results.update({'layer': p.layer, 'num_orderings': p.num_orderings,
                  'num_channels': int(orderings.shape[1]), 'chance': 1.0 / info.num_classes})
  return results


def run(config: Any, workdir: str) -> dict[str, Any]:
  """Probes ``config.probe.source_workdir``'s newest checkpoint (`evaluate`), writes
  ``results.json`` and ``accuracy_histogram.png`` to ``workdir`` and returns the results."""
  from gpjax import figures, runs
  validate_config(config)
  p = config.probe
  source, model, variables, info = runs.load_run(p.source_workdir, p.dtype, p.data_dir)
  start = time.perf_counter()
  results = evaluate(config, source, model, variables, info)
  results['seconds'] = time.perf_counter() - start
  results.update(runs.provenance(config, source, info))
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    writers.write_json(os.path.join(workdir, 'results.json'), results)
    m = source.model
    figures.save_permutation_histogram(
        os.path.join(workdir, 'accuracy_histogram.png'), results['accuracy_per_ordering'],
        results['chance'], f'{source.task}: {m.backbone} {m.head}, padding={m.padding}; '
        f'orderings at layer {p.layer} (K={p.num_orderings}, {results["num_images"]} images)')
    print(f'layer {p.layer}: identity accuracy {results["accuracy_identity"]:.4f}, chance '
          f'{results["chance"]:.4f}, other orderings {results["summary"]}', flush=True)
  return results
