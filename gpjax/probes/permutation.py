r"""The permutation probe (job ``permutation_probe``): a trained run's accuracy under K random
channel orderings at one layer (`gpjax.models.orderings`), over all devices.

Images go ``image_chunk`` at a time per device, sharded over the ``data`` mesh
axis (``shard_map``, counts summed with ``psum``). `evaluate` probes a loaded run
(`gpjax.tasks.runs.load_run`); configs/permutation_probe.py runs it.
"""

import itertools
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from gpjax.checks import DTYPES, at_least, one_of
from gpjax.core import figures, parallel, writers
from gpjax.data import batching, examples, input_pipeline
from gpjax.errors import ConfigError
from gpjax.models.classifier import PERMUTE_LAYERS, Classifier
from gpjax.models.orderings import Sums, probe_model, probe_sums, random_orderings
from gpjax.probes import runner
from gpjax.tasks import runs


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


def check(config: Any) -> None:
  """Raises ConfigError with one line naming the first bad ``config.probe`` field."""
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
  m = writers.read_json(os.path.join(src, 'config.json'))['model']
  head = m['head']
  if p.layer == 5 and head == 'gapnet':
    raise ConfigError(f'config.probe.layer=5 permutes the pooled vector before a Dense layer, but '
                      f'the model in {src!r} is a GAPNet, whose pooled vector is its logits: '
                      'choose a layer in 1..4.')
  channels = Classifier(num_classes=2, backbone=m['backbone'], head=head, width=m['width'],
                        stem=m['stem'], permute_layer=p.layer).ordering_length()
  if channels < 19 and p.num_orderings > math.factorial(channels):
    raise ConfigError(f'config.probe.num_orderings={p.num_orderings!r}: {channels} channels at '
                      f'layer {p.layer} have only {math.factorial(channels)} orderings (the '
                      'identity among them); give at most that many.')


def load(config: Any) -> runs.Run:
  """The run ``config.probe.source_workdir`` at its newest checkpoint."""
  p = config.probe
  return runs.load_run(p.source_workdir, p.dtype, p.data_dir)


def evaluate(config: Any, run: runs.Run) -> dict[str, Any]:
  """`summarize`'s accuracies of a loaded run under ``config.probe``'s orderings, on the
  run's own test canvases (those of its evaluations: keys from its ``eval.seed`` and each
  example's index)."""
  source, model, variables, info = run.config, run.model, run.variables, run.info
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


def report(config: Any, workdir: str, run: runs.Run, results: dict[str, Any]) -> None:
  """accuracy_histogram.png: the accuracy of each ordering against chance."""
  p, m = config.probe, run.config.model
  figures.save_permutation_histogram(
      os.path.join(workdir, 'accuracy_histogram.png'), results['accuracy_per_ordering'],
      results['chance'], f'{run.config.task}: {m.backbone} {m.head}, padding={m.padding}; '
      f'orderings at layer {p.layer} (K={p.num_orderings}, {results["num_images"]} images)')


PROBE = runner.Probe(check=check, load=load, evaluate=evaluate, report=report)
JOBS = {'permutation_probe': runner.job(PROBE, "a run's accuracy under K random channel "
                                               'orderings at one layer')}
