r"""The position attack: zero ranked channels of the backbone's last map and measure mIoU
(whole image and left / center / right regions; see `gpjax.core.metrics`).

Every attacked variant is a channel mask (C,) of 0/1: row 0 keeps all channels
(clean), then for each N of ``counts``: the top-N of the ``overall``, ``left``
and ``right`` rankings (`ranking`), and N channels of each of ``random_draws``
random orders (draw r = ``default_rng((seed, r)).permutation(C)``; its first N,
so the sets of one draw are nested as a ranking's). The masks are data: for
each batch of images the backbone runs once and the head runs on
``map * mask`` for all K masks, ``mask_chunk`` at a time (``lax.map`` of a
vmap), in one jitted call; per-region confusion matrices are summed over
batches and devices.

Job ``attack`` (configs/attack.py; the ranking alone is job ``rank``,
`gpjax.probes.ranking`): it ranks (or reads ``probe.ranking_file``), attacks, and
writes ``ranking.json``, ``results.json`` (mIoU per kind, N and region; random: per
draw, mean and std) and ``curves.png`` (mIoU vs N per region).
"""

import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from gpjax.core import figures, metrics, parallel, writers
from gpjax.data import batching, canvas, segmentation
from gpjax.probes import ranking as ranking_lib
from gpjax.probes import runner
from gpjax.tasks import runs

KINDS = ('overall', 'left', 'right')


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


def attack_curves(config: Any, model: Any, variables: Any, data: Any,
                  ranking: dict[str, Any]) -> dict[str, Any]:
  """`summarize`'s mIoU curves of ``model`` on ``data`` = (source, SegInfo) with the
  channels of ``ranking`` (and ``config.attack``'s random draws) zeroed."""
  source, info = data
  p, a = config.probe, config.attack
  num_channels = model.feature_channels
  counts = ranking_lib.parse_counts(a.counts)
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


def evaluate(config: Any, run: runs.Run) -> dict[str, Any]:
  """`attack_curves` of a loaded run on ``config.data``'s set, with the channels ranked on it
  (or read from ``probe.ranking_file``); the ranking is kept under ``ranking``."""
  data = ranking_lib.eval_data(config, run)
  start = time.perf_counter()
  if config.probe.ranking_file:
    ranking = writers.read_json(config.probe.ranking_file)
  else:
    ranking = ranking_lib.rank_channels(config, run.model, run.variables, data)
  rank_seconds = time.perf_counter() - start
  start = time.perf_counter()
  results = attack_curves(config, run.model, run.variables, data, ranking)
  results.update({'rank_seconds': rank_seconds, 'attack_seconds': time.perf_counter() - start,
                  'ranking': ranking})
  return results


def report(config: Any, workdir: str, run: runs.Run, results: dict[str, Any]) -> None:
  """ranking.json (reusable as ``probe.ranking_file``), curves.png and one printed line."""
  writers.write_json(os.path.join(workdir, 'ranking.json'), results['ranking'])
  figures.save_attack_curves(
      os.path.join(workdir, 'curves.png'), results,
      f'{results["dataset"]}: DeepLabv3-{run.model.backbone} (C={results["num_channels"]}), '
      f'{results["num_images"]} images; clean mIoU {results["clean"]["whole"]:.3f}')
  print(f'clean mIoU {results["clean"]["whole"]:.4f}; ' + ', '.join(
      f'N={n}: overall {o:.4f} random {r:.4f}' for n, o, r in zip(
          results['counts'], results['top_overall']['whole'],
          results['random']['whole']['mean'] or results['top_overall']['whole'])), flush=True)


PROBE = runner.Probe(check=ranking_lib.check, load=ranking_lib.load, evaluate=evaluate,
                     report=report)
JOBS = {'attack': runner.job(PROBE, "mIoU of a segmentation run with its top-ranked or random "
                                    'position channels zeroed')}
