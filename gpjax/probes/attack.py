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

Job ``attack`` (configs/attack.py): ranks (or reads ``probe.ranking_file``),
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

from gpjax import metrics, parallel

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


def save_curves(path: str, results: dict[str, Any], title: str) -> None:
  """mIoU vs N, one panel per region: top-N overall/left/right and random (mean ± std)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  counts = results['counts']
  fig, axes = plt.subplots(1, len(results['regions']), figsize=(4 * len(results['regions']), 3.6),
                           sharey=True)
  for ax, region in zip(axes, results['regions']):
    for kind, color in zip(KINDS, ('C3', 'C0', 'C2')):
      ax.plot(counts, results[f'top_{kind}'][region], 'o-', color=color, ms=3,
              label=f'top-N {kind}')
    mean = np.asarray(results['random'][region]['mean'])
    if mean.size:
      std = np.asarray(results['random'][region]['std'])
      ax.plot(counts, mean, 's--', color='gray', ms=3, label='random N (mean ± std)')
      ax.fill_between(counts, mean - std, mean + std, color='gray', alpha=0.25)
    ax.set_title(f'{region} region', fontsize=9)
    ax.set_xlabel('N zeroed channels')
    ax.grid(alpha=0.3)
  axes[0].set_ylabel('mIoU')
  axes[0].legend(fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def load(config: Any) -> tuple[Any, Any, tuple[Any, Any]]:
  """(model, variables, (evaluation source, SegInfo)) of an attack/rank config."""
  from gpjax.data import segmentation
  from gpjax.tasks import segmentation as segment
  from gpjax.validate import ConfigError
  model, variables, src = segment.load_model(config.source, config.probe.dtype)
  d = config.data
  name = d.name or src.get('name', '')
  if not name:
    raise ConfigError('config.data.name is empty: name the evaluation set of the imported '
                      'checkpoint (e.g. cityscapes).')
  size = ((d.image_height, d.image_width) if d.image_height else
          (src['image_height'], src['image_width']) if src.get('image_height') else None)
  source, info = segmentation.load_segmentation(
      name, d.split, data_dir=d.data_dir or src.get('data_dir') or None, image_size=size)
  if info.num_classes != model.num_classes:
    raise ConfigError(f'The model predicts {model.num_classes} classes but {name!r} has '
                      f'{info.num_classes}.')
  return model, variables, (source, info)


def validate_config(config: Any) -> None:
  """Raises ConfigError naming the first bad field of an ``attack``/``rank`` config."""
  from gpjax.validate import DTYPES, ConfigError, _at_least, _one_of
  s, p, a = config.source, config.probe, config.attack
  if bool(s.workdir) == bool(s.torch_checkpoint):
    raise ConfigError('Set exactly one of config.source.workdir (a trained segment run) and '
                      'config.source.torch_checkpoint (a PyTorch .pth).')
  path = s.workdir or s.torch_checkpoint
  if not os.path.exists(path):
    raise ConfigError(f'config.source: {path!r} does not exist.')
  if s.workdir and not os.path.isfile(os.path.join(s.workdir, 'config.json')):
    raise ConfigError(f'config.source.workdir={s.workdir!r} holds no config.json: not a '
                      'segment workdir.')
  if p.ranking_file and not os.path.isfile(p.ranking_file):
    raise ConfigError(f'config.probe.ranking_file={p.ranking_file!r} does not exist.')
  if bool(config.data.image_height) != bool(config.data.image_width):
    raise ConfigError('config.data.image_height and image_width must both be 0 or both > 0.')
  for field in ('batch_size', 'mask_chunk'):
    _at_least(f'probe.{field}', p[field], 1)
  _at_least('probe.num_examples', p.num_examples, 0)
  _one_of('probe.dtype', p.dtype, DTYPES)
  counts = parse_counts(a.counts)
  if not counts or min(counts) < 0:
    raise ConfigError(f'config.attack.counts={a.counts!r}: give comma-separated N >= 0.')
  _at_least('attack.random_draws', a.random_draws, 0)
  _at_least('attack.seed', a.seed, 0)


def run(config: Any, workdir: str) -> dict[str, Any]:
  """The attack job: rank (or read the ranking), sweep the masks, write results and curves."""
  from gpjax import writers
  from gpjax.data import batching, canvas, segmentation
  from gpjax.probes import ranking as ranking_lib
  validate_config(config)
  model, variables, (source, info) = load(config)
  lead = jax.process_index() == 0
  start = time.perf_counter()
  p, a = config.probe, config.attack
  if p.ranking_file:
    ranking = writers.read_json(p.ranking_file)
  else:
    ranking = ranking_lib.rank_segmentation(config, model, variables, (source, info))
  rank_seconds = time.perf_counter() - start
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
  start, conf = time.perf_counter(), None
  for batch in batching.eval_batches(source, p.batch_size, num_examples=p.num_examples,
                                     pad_label=segmentation.IGNORE_LABEL,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count()):
    c = fn(variables, parallel.to_global(mesh, batch), device_masks)
    conf = c if conf is None else conf + c
  results = summarize(jax.device_get(conf), rows, counts, info.class_names)
  results.update({
      'num_channels': num_channels, 'num_masks': len(rows), 'random_draws': a.random_draws,
      'skipped_counts': [n for n in counts if n > num_channels], 'dataset': info.name,
      'num_images': min(p.num_examples or len(source), len(source)),
      'rank_seconds': rank_seconds, 'attack_seconds': time.perf_counter() - start,
      'config': config.to_dict(), 'device_kind': jax.devices()[0].device_kind,
      'num_devices': jax.device_count(), 'jax_version': jax.__version__})
  if lead:
    os.makedirs(workdir, exist_ok=True)
    writers.write_json(os.path.join(workdir, 'ranking.json'), ranking)
    writers.write_json(os.path.join(workdir, 'results.json'), results)
    save_curves(os.path.join(workdir, 'curves.png'), results,
                f'{info.name}: DeepLabv3-{model.backbone} (C={num_channels}), '
                f'{results["num_images"]} images; clean mIoU {results["clean"]["whole"]:.3f}')
    print(f'clean mIoU {results["clean"]["whole"]:.4f}; ' + ', '.join(
        f'N={n}: overall {o:.4f} random {r:.4f}' for n, o, r in zip(
            results['counts'], results['top_overall']['whole'],
            results['random']['whole']['mean'] or results['top_overall']['whole'])), flush=True)
  return results
