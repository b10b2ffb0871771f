r"""The position attack: zero ranked channels of the backbone's last map and measure mIoU
(whole image and left / center / right regions; see `gpjax.metrics`).

Every attacked variant is a channel mask (C,) of 0/1: row 0 keeps all channels
(clean), then for each N of ``counts``: the top-N of the ``overall``, ``left``
and ``right`` rankings (`ranking`), and N channels of each of ``random_draws``
random orders (draw r = ``default_rng((seed, r)).permutation(C)``; its first N,
so the sets of one draw are nested as a ranking's). The masks are data: for
each batch of images the backbone runs once and the head runs on
``map * mask`` for all K masks, ``mask_chunk`` at a time (``lax.map`` of a
vmap), in one jitted call; per-region confusion matrices are summed over
batches and devices.

Jobs ``rank`` (`run_rank`: ranking.json only) and ``attack`` (`run`), configs/attack.py:
the attack ranks (or reads ``probe.ranking_file``),
attacks, and writes ``ranking.json``, ``results.json`` (mIoU per kind, N and
region; random: per draw, mean and std) and ``curves.png`` (mIoU vs N per region).
"""

import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from gpjax import figures, metrics, parallel, runs, writers
from gpjax.data import batching, canvas, segmentation
from gpjax.interop import torch_import
from gpjax.probes import ranking as ranking_lib
from gpjax.validate import DTYPES, ConfigError, at_least, one_of

KINDS = ('overall', 'left', 'right')


def parse_counts(text: str) -> list[int]:
  """'0,10,25' -> [0, 10, 25]."""
  return [int(s) for s in str(text).split(',') if s.strip()]


def channel_masks(ranking: dict[str, Sequence[int]], counts: Sequence[int], num_channels: int,
                  random_draws: int, seed: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
  """The masks of one attack sweep.

  Args:
    ranking: ``overall``, ``left`` and ``right`` channel orders (C,).
    counts: the N values; 0 (clean) and N > C are left out of the masks.
    num_channels: C.
    random_draws: random channel orders.
    seed: seed of the random orders.

  Returns:
    float32 (K, C) masks, row 0 all ones; and one ``{'kind', 'count', 'draw'}``
    per row (kind 'clean', one of `KINDS`, or 'random').
  """
  counts = [n for n in counts if 0 < n <= num_channels]
  orders = [(kind, None, np.asarray(ranking[kind])) for kind in KINDS]
  orders += [('random', r, np.random.default_rng((seed, r)).permutation(num_channels))
             for r in range(random_draws)]
  masks, rows = [np.ones(num_channels, np.float32)], [{'kind': 'clean', 'count': 0, 'draw': None}]
  for kind, draw, order in orders:
    for n in counts:
      mask = np.ones(num_channels, np.float32)
      mask[order[:n]] = 0.0
      masks.append(mask)
      rows.append({'kind': kind, 'count': n, 'draw': draw})
  return np.stack(masks), rows


def attack_sums(model: Any, variables: Any, images: jax.Array, labels: jax.Array,
                weights: jax.Array, masks: jax.Array, *, num_classes: int,
                mask_chunk: int) -> jax.Array:
  """Per-mask, per-region confusion matrices of one batch (jittable).

  Args:
    model: a `DeepLabV3`; variables: its ``{'params', 'batch_stats'}``.
    images: normalised (n, H, W, 3); labels: int (n, H, W), 255 ignored.
    weights: (n, H, W) 0/1, 0 on padding rows.
    masks: (K, C) channel masks of the backbone's last map.
    num_classes: K classes.
    mask_chunk: masks evaluated at once.

  Returns:
    int32 (K, len(metrics.REGIONS), num_classes, num_classes).
  """
  feats = model.apply(variables, images, train=False)[1]['stage4']

  def one(mask):
    logits, _ = model.apply(variables, feats, train=False, channel_mask=mask, from_features=True,
                            output_size=images.shape[1:3])
    return metrics.region_confusion(labels, jnp.argmax(logits, -1), num_classes, weights)

  return jax.lax.map(one, masks, batch_size=min(mask_chunk, masks.shape[0]))


def make_attack(model: Any, mesh: jax.sharding.Mesh, *, num_classes: int, mask_chunk: int,
                prepare: Any) -> Any:
  """Jitted ``fn(variables, batch, masks) -> (K, R, nc, nc)`` summed over devices; ``prepare``
  maps a device's batch shard to (images, labels, weights)."""

  def local(variables, batch, masks):
    sums = attack_sums(model, variables, *prepare(batch), masks, num_classes=num_classes,
                       mask_chunk=mask_chunk)
    return jax.lax.psum(sums, parallel.DATA_AXIS)

  return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS), P()),
                               out_specs=P()))


def summarize(conf: Any, rows: list[dict[str, Any]], counts: Sequence[int],
              class_names: Sequence[str]) -> dict[str, Any]:
  """mIoU per row and region, arranged as curves over ``counts`` (0 = clean)."""
  conf = np.asarray(conf)
  miou = [{r: metrics.mean_iou(conf[k, i]) for i, r in enumerate(metrics.REGIONS)}
          for k in range(len(rows))]
  lookup = {(row['kind'], row['count'], row['draw']): m for row, m in zip(rows, miou)}
  clean = miou[0]
  kept = [n for n in counts if (n == 0) or any(row['count'] == n for row in rows)]

  def curve(kind, draw=None):
    return {r: [clean[r] if n == 0 else lookup[(kind, n, draw)][r] for n in kept]
            for r in metrics.REGIONS}

  draws = sorted({row['draw'] for row in rows if row['kind'] == 'random'})
  random = {r: {'draws': [curve('random', d)[r] for d in draws]} for r in metrics.REGIONS}
  for r in metrics.REGIONS:
    values = np.asarray(random[r]['draws'], np.float64).reshape(len(draws), len(kept))
    random[r]['mean'] = values.mean(0).tolist() if draws else []
    random[r]['std'] = values.std(0).tolist() if draws else []
  return {'regions': list(metrics.REGIONS), 'counts': kept, 'clean': clean,
          'clean_summary': metrics.summarize(conf[0, 0], tuple(class_names)),
          **{f'top_{kind}': curve(kind) for kind in KINDS}, 'random': random,
          'rows': [dict(row, miou=m) for row, m in zip(rows, miou)]}


def load(config: Any) -> tuple[Any, Any, tuple[Any, Any]]:
  """(model, variables, (evaluation source, SegInfo)) of an attack/rank config: the
  ``config.source`` model (`gpjax.runs.load_source`) and ``config.data``'s set, by default
  the source run's own."""
  source, model, variables, _ = runs.load_source(config.source, config.probe.dtype)
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
  return model, variables, (data, info)


def validate_config(config: Any) -> None:
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
  if p.ranking_file and not os.path.isfile(p.ranking_file):
    raise ConfigError(f'config.probe.ranking_file={p.ranking_file!r} does not exist.')
  if bool(config.data.image_height) != bool(config.data.image_width):
    raise ConfigError('config.data.image_height and image_width must both be 0 or both > 0.')
  for field in ('batch_size', 'mask_chunk'):
    at_least(f'probe.{field}', p[field], 1)
  at_least('probe.num_examples', p.num_examples, 0)
  at_least('source.step', s.step, 0)
  one_of('probe.dtype', p.dtype, DTYPES)
  counts = parse_counts(a.counts)
  if not counts or min(counts) < 0:
    raise ConfigError(f'config.attack.counts={a.counts!r}: give comma-separated N >= 0.')
  at_least('attack.random_draws', a.random_draws, 0)
  at_least('attack.seed', a.seed, 0)


def evaluate(config: Any, model: Any, variables: Any, data: Any,
             ranking: dict[str, Any]) -> dict[str, Any]:
  """`summarize`'s mIoU curves of ``model`` on ``data`` = (source, SegInfo) with the
  channels of ``ranking`` (and ``config.attack``'s random draws) zeroed."""
  source, info = data
  p, a = config.probe, config.attack
  num_channels = model.feature_channels
  counts = parse_counts(a.counts)
  masks, rows = channel_masks(ranking, counts, num_channels, a.random_draws, a.seed)
  mesh = parallel.make_mesh()
  parallel.check_divisible('config.probe.batch_size', p.batch_size, jax.device_count(), 'devices')
  prepare = lambda b: (canvas.normalize(b['image'], info.mean, info.std), b['label'].astype(jnp.int32),
                       jnp.broadcast_to(b['mask'][:, None, None], b['label'].shape))
  fn = make_attack(model, mesh, num_classes=info.num_classes, mask_chunk=p.mask_chunk,
                   prepare=prepare)
  replicated = parallel.replicated(mesh)
  variables = jax.device_put(variables, replicated)
  device_masks = jax.device_put(masks, replicated)
  batches = batching.eval_batches(source, p.batch_size, num_examples=p.num_examples,
                                  pad_label=segmentation.IGNORE_LABEL,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count())
  conf = parallel.accumulate(lambda b: fn(variables, parallel.to_global(mesh, b), device_masks),
                         batches)
  results = summarize(conf, rows, counts, info.class_names)
  results.update({
      'num_channels': num_channels, 'num_masks': len(rows), 'random_draws': a.random_draws,
      'skipped_counts': [n for n in counts if n > num_channels], 'dataset': info.name,
      'num_images': min(p.num_examples or len(source), len(source))})
  return results


def run(config: Any, workdir: str) -> dict[str, Any]:
  """The attack job: rank (or read the ranking), sweep the masks, write results and curves."""
  validate_config(config)
  model, variables, data = load(config)
  start = time.perf_counter()
  if config.probe.ranking_file:
    ranking = writers.read_json(config.probe.ranking_file)
  else:
    ranking = ranking_lib.evaluate(config, model, variables, data)
  rank_seconds = time.perf_counter() - start
  start = time.perf_counter()
  results = evaluate(config, model, variables, data, ranking)
  results.update({'rank_seconds': rank_seconds, 'attack_seconds': time.perf_counter() - start})
  results.update(runs.provenance(config, None, None))
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    writers.write_json(os.path.join(workdir, 'ranking.json'), ranking)
    writers.write_json(os.path.join(workdir, 'results.json'), results)
    figures.save_attack_curves(
        os.path.join(workdir, 'curves.png'), results,
        f'{data[1].name}: DeepLabv3-{model.backbone} (C={results["num_channels"]}), '
        f'{results["num_images"]} images; clean mIoU {results["clean"]["whole"]:.3f}')
    print(f'clean mIoU {results["clean"]["whole"]:.4f}; ' + ', '.join(
        f'N={n}: overall {o:.4f} random {r:.4f}' for n, o, r in zip(
            results['counts'], results['top_overall']['whole'],
            results['random']['whole']['mean'] or results['top_overall']['whole'])), flush=True)
  return results


def run_rank(config: Any, workdir: str) -> dict[str, Any]:
  """The rank job: `gpjax.probes.ranking.evaluate` of the source model; writes and returns
  ``ranking.json``."""
  validate_config(config)
  model, variables, data = load(config)
  ranking = ranking_lib.evaluate(config, model, variables, data)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    writers.write_json(os.path.join(workdir, 'ranking.json'), ranking)
  return ranking
