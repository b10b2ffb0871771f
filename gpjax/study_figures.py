"""The figures of the studies and of the reproduction report: accuracy.png, layer_protocol.png
and metrics.png (`gpjax.study`), accuracy_vs_shift.png (`gpjax.augshift_study`), summary.png and
claim_curves.png (`gpjax.report`). Each reads a study's summary dict (its results.json), nothing else.
"""

from typing import Any

import matplotlib
matplotlib.use('Agg')  # Files only: no display is needed or opened.
import matplotlib.pyplot as plt
import numpy as np

from gpjax import claims as claims_lib


def _save(fig: Any, path: str) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def columns(summary: dict[str, Any]) -> list[tuple[str, str]]:
  """The (task, head) pairs of a grid study's cells, in order of first appearance."""
  cols = []
  for c in summary['cells']:
    if (c['task'], c['head']) not in cols:
      cols.append((c['task'], c['head']))
  return cols


def save_accuracy_figure(path: str, summary: dict[str, Any]) -> None:
  """Grouped bars: accuracy per padding, one bar per task x head, chance dashed."""
  cols = columns(summary)
  grids = sorted({c['grid'] for c in summary['cells']})
  fig, axes = plt.subplots(1, len(grids), figsize=(9 * len(grids), 4), squeeze=False)
  field = summary.get('sweep_field')
  for ax, g in zip(axes[0], grids):
    cells = [c for c in summary['cells'] if c['grid'] == g]
    paddings = list(dict.fromkeys((c['padding'], c.get('sweep')) for c in cells))
    width = 0.8 / len(cols)
    for j, (t, h) in enumerate(cols):
      pick = {(c['padding'], c.get('sweep')): c for c in cells if (c['task'], c['head']) == (t, h)}
      xs = [i + (j - (len(cols) - 1) / 2) * width for i, p in enumerate(paddings) if p in pick]
      ax.bar(xs, [100 * pick[p]['mean'] for p in paddings if p in pick], width,
             yerr=[100 * pick[p]['std'] for p in paddings if p in pick], capsize=2,
             label=f'{t} {h}')
    for t, style in (('location', '--'), ('semantic', ':')):
      chance = [c['chance'] for c in cells if c['task'] == t]
      if chance:
        ax.axhline(100 * chance[0], color='gray', ls=style, lw=1, label=f'{t} chance')
    ax.set_xticks(range(len(paddings)), [p if field is None else f'{p}\n{field}={v}'
                                         for p, v in paddings])
    ax.set_ylim(0, 100)
    ax.set_ylabel('test accuracy (%)')
    ax.set_title(f'grid {g}x{g}')
    ax.legend(fontsize=7, ncol=2)
  _save(fig, path)


def save_layer_figure(path: str, rows: list[dict[str, Any]]) -> None:
  """The paper's layer protocol: PermuteNet accuracy (mean ± std over seeds) against the
  permuted layer, one line per task and grid, with the GAPNet reference and chance."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for (task, g), color in zip(dict.fromkeys((r['task'], r['grid']) for r in rows),
                              plt.rcParams['axes.prop_cycle'].by_key()['color']):
    pick = sorted((r for r in rows if (r['task'], r['grid']) == (task, g)),
                  key=lambda r: r['layer'])
    ax.errorbar([r['layer'] for r in pick], [100 * r['mean'] for r in pick],
                yerr=[100 * r['std'] for r in pick], marker='o', capsize=3, color=color,
                label=f'{task} g={g} PermuteNet')
    if pick[0]['gapnet_mean'] is not None:
      ax.axhline(100 * pick[0]['gapnet_mean'], color=color, lw=1, label=f'{task} GAPNet')
    ax.axhline(100 * pick[0]['chance'], color=color, ls=':', lw=1, label=f'{task} chance')
  ax.set_xticks(range(1, 6), ['stage 1', 'stage 2', 'stage 3', 'stage 4', '5 (pooled)'])
  ax.set_ylim(0, 100)
  ax.set_xlabel('permuted layer (trained and tested so)')
  ax.set_ylabel('test accuracy (%), mean over orderings')
  ax.set_title("PermuteNet by layer: the paper's protocol, zero padding")
  ax.legend(fontsize=7)
  _save(fig, path)


def save_metric_figure(path: str, summary: dict[str, Any]) -> None:
  """One panel per metric (test accuracy first) against the sweep's values, one line
  per (task, head, padding, grid), error bars = std over seeds."""
  field, cells = summary['sweep_field'], summary['cells']
  metrics = ['test accuracy'] + list(cells[0]['metrics'])
  fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.5), squeeze=False)
  lines = list(dict.fromkeys((c['task'], c['head'], c['padding'], c['grid']) for c in cells))
  values = sorted({c['sweep'] for c in cells})
  positive = [abs(v) for v in values if v]
  for ax, m in zip(axes[0], metrics):
    for key in lines:
      pts = sorted((c['sweep'], c) for c in cells
                   if (c['task'], c['head'], c['padding'], c['grid']) == key)
      stats = [(c['mean'], c['std']) if m == 'test accuracy' else
               (c['metrics'][m]['mean'], c['metrics'][m]['std']) for _, c in pts]
      ax.errorbar([v for v, _ in pts], [a for a, _ in stats], yerr=[b for _, b in stats],
                  marker='o', capsize=3, label=' '.join(map(str, key[:3])) + f' g={key[3]}')
    if positive and 0 in values and len(positive) > 1:  # Log scale that still shows 0.
      ax.set_xscale('symlog', linthresh=min(positive))
    elif positive and min(values) > 0:
      ax.set_xscale('log')
    ax.set_xlabel(field)
    ax.set_title(m)
  axes[0][0].legend(fontsize=7)
  _save(fig, path)


def save_shift_curves(path: str, curves: dict[tuple, list[dict[str, Any]]], field: str) -> None:
  """Accuracy vs column offset, mean over seeds (band = std), one line per (head, padding,
  value) of ``curves``: (head, padding, value) -> each seed's ``accuracy_vs_shift``; a
  string value (e.g. 'standard') names its line by itself."""
  fig, ax = plt.subplots(figsize=(6.4, 4))
  for (head, padding, value), runs in curves.items():
    x = [o[1] for o in runs[0]['offsets']]
    acc = 100 * np.array([r['accuracy'] for r in runs])
    label = f'{head} {padding} ' + (value if isinstance(value, str) else f'{field}={value}')
    line, = ax.plot(x, acc.mean(0), marker='o', ms=3, label=label)
    ax.fill_between(x, acc.mean(0) - acc.std(0), acc.mean(0) + acc.std(0), alpha=0.15,
                    color=line.get_color())
  ax.set_xlabel('column offset of the source on the canvas (px)')
  ax.set_ylabel('test accuracy (%)')
  ax.legend(fontsize=7)
  _save(fig, path)


def save_claim_curves(path: str, curves: dict[str, Any], thresholds: dict[str, Any]) -> None:
  """The location claims against training steps (`claims.location_over_steps`): each
  claim's two sides, mean ± std over seeds where the side is an accuracy, and the line the
  rule needs (dashed); log-scaled steps."""
  steps = curves['steps']
  fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))

  def side(ax, key, std, label, color):
    e = curves_of[key]
    mean = np.array([v if v is not None else np.nan for v in e[0]], float) * 100
    ax.plot(steps, mean, 'o-', color=color, label=label)
    if std is not None:
      band = np.array(e[1], float) * 100
      ax.fill_between(steps, mean - band, mean + band, color=color, alpha=0.2)
    return mean

  def series(claim, field):
    return [e[field] for e in curves[claim]['evidence']]

  curves_of = {
      'gap': (series('gap_location', 'accuracy'), series('gap_location', 'std')),
      'gapnet': (series('permute_location', 'gapnet'), series('permute_location', 'gapnet_std')),
      'permutenet': (series('permute_location', 'permutenet'),
                     series('permute_location', 'permutenet_std')),
      'semantic': (series('permute_semantic', 'semantic_retention'), None),
      'location': (series('permute_semantic', 'location_retention'), None)}
  ax = axes[0]
  side(ax, 'gap', True, 'GAPNet location', 'C0')
  ax.plot(steps, [100 * v for v in series('gap_location', 'threshold')], 'k--', lw=1,
          label='needed')
  ax.set_title('gap_location', fontsize=9)
  ax = axes[1]
  gap = side(ax, 'gapnet', True, 'GAPNet location', 'C0')
  side(ax, 'permutenet', True, 'PermuteNet location', 'C1')
  ax.plot(steps, gap - 100 * thresholds['permute_location'], 'k--', lw=1,
          label='PermuteNet must be below')
  ax.set_title('permute_location', fontsize=9)
  ax = axes[2]
  side(ax, 'semantic', None, 'semantic share kept', 'C2')
  loc = side(ax, 'location', None, 'location share kept', 'C1')
  ax.plot(steps, loc + 100 * thresholds['permute_semantic'], 'k--', lw=1,
          label='semantic must be above')
  ax.set_title('permute_semantic: (PermuteNet - chance) / (GAPNet - chance)', fontsize=9)
  for i, ax in enumerate(axes):
    ax.set_xscale('log')
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.minorticks_off()
    ax.set_xlabel('training step')
    ax.set_ylabel('test accuracy (%)' if i < 2 else 'share kept (%)')
    if i < 2:
      ax.set_ylim(0, 105)
    ax.legend(fontsize=7)
  _save(fig, path)


def save_summary_figure(path: str, results: dict[str, Any]) -> None:
  """Four panels: GAPNet vs PermuteNet per task, probe retention per layer, AugShift's
  invariance measures per lambda, and mIoU vs N for top-N overall and random N."""
  loc, aug, seg = (results['experiments'][k] for k in ('location', 'augshift', 'segmentation'))
  g = results['config']['claims']['grid']
  fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))

  ax = axes[0]
  for j, head in enumerate(('gapnet', 'permutenet')):
    cells = [claims_lib.cell(loc, t, head, 'zero', g) for t in ('location', 'semantic')]
    ax.bar(np.arange(2) + (j - 0.5) * 0.38, [100 * c['mean'] for c in cells], 0.38,
           yerr=[100 * c['std'] for c in cells], capsize=3, label=head)
    for i, c in enumerate(cells):
      ax.hlines(100 * c['chance'], i - 0.4, i + 0.4, colors='gray', linestyles='--', lw=1)
  ax.set_xticks(range(2), ['location', 'semantic'])
  ax.set_ylim(0, 100)
  ax.set_ylabel('test accuracy (%)')
  ax.set_title('zero padding, chance dashed', fontsize=9)
  ax.legend(fontsize=8)

  ax = axes[1]
  for task in ('location', 'semantic'):
    rows = sorted((r['layer'], r['retained']) for r in loc.get('probes', [])
                  if r['task'] == task and r['grid'] == g)
    if rows:
      ax.plot(*zip(*[(l, 100 * k) for l, k in rows]), 'o-', label=task)
  ax.set_xlabel('layer of the random channel orderings (5 = pooled)')
  ax.set_ylabel('accuracy kept (%)')
  ax.set_ylim(0, 105)
  ax.set_title('unpermuted network, random orderings', fontsize=9)
  ax.legend(fontsize=8)

  ax = axes[2]
  cells = aug.get('standard', []) + sorted(aug['cells'], key=lambda c: c['sweep'])
  x = np.arange(len(cells))
  for j, metric in enumerate(('consistency', 'readout_accuracy')):
    ax.bar(x + (j - 0.5) * 0.38, [100 * c['metrics'][metric]['mean'] for c in cells], 0.38,
           yerr=[100 * c['metrics'][metric]['std'] for c in cells], capsize=3, label=metric)
  ax.set_xticks(x, [f'lambda={c["sweep"]:g}' if 'sweep' in c else 'standard' for c in cells])
  ax.set_ylim(0, 105)
  ax.set_ylabel('%')
  ax.set_title('AugShift: shift consistency, location readout', fontsize=9)
  ax.legend(fontsize=8)

  ax = axes[3]
  curves = seg['curves']
  ax.plot(curves['counts'], curves['top_overall']['whole'], 'o-', color='C3', label='top-N overall')
  mean = np.asarray(curves['random']['whole']['mean'])
  if mean.size:
    std = np.asarray(curves['random']['whole']['std'])
    ax.plot(curves['counts'], mean, 's--', color='gray', label='random N')
    ax.fill_between(curves['counts'], mean - std, mean + std, color='gray', alpha=0.25)
  ax.set_xlabel(f'N zeroed channels of {seg["num_channels"]}')
  ax.set_ylabel('whole-image mIoU')
  ax.set_title('segmentation attack', fontsize=9)
  ax.legend(fontsize=8)
  fig.suptitle(f'{results["suite"]} suite: ' + ', '.join(
      f'{k} {claims_lib.verdict(c)}' for k, c in results['claims'].items()), fontsize=9)
  _save(fig, path)
