"""The figures of the studies and of the reproduction report: accuracy.png, layer_protocol.png
and metrics.png (`gpjax.studies.grid`), accuracy_vs_shift.png (`gpjax.studies.augshift`), summary.png and
claim_curves.png (`gpjax.studies.report`). Each reads a study's summary dict (its results.json), nothing else.
"""

from typing import Any, Callable

import numpy as np

from gpjax.core.figures import plt
from gpjax.studies import claims as claims_lib


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
  """Each claim measured over training (`claims.over_steps`) against its steps: the claim's
  two sides (mean ± std over seeds where the evidence has a std) and the line the rule needs
  (dashed); log-scaled steps. One panel per claim, the location claims in the first row."""
  keys = [k for k in PANELS if k in curves]
  rows = 1 + any(k in curves for k in PANELS[3:])
  fig, axes = plt.subplots(rows, 3, figsize=(14, 3.8 * rows), squeeze=False)
  for ax in axes.flat:
    ax.set_visible(False)
  for key in keys:
    i = PANELS.index(key)
    ax = axes[i // 3, i % 3]  # One row: only first-row keys.
    ax.set_visible(True)
    steps, evidence = curves[key]['steps'], curves[key]['evidence']
    title, ylabel, sides, needed = _CLAIM_PANELS[key](evidence, thresholds)
    for j, (label, values, std) in enumerate(sides):
      mean = _percent(values)
      ax.plot(steps, mean, 'o-', color=f'C{j}', label=label)
      if std is not None:
        band = _percent(std)
        ax.fill_between(steps, mean - band, mean + band, color=f'C{j}', alpha=0.2)
    label, values = needed
    ax.plot(steps, _percent(values), 'k--', lw=1, label=label)
    ax.set_title(title, fontsize=9)
    ax.set_xscale('log')
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.minorticks_off()
    ax.set_xlabel('training step')
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
  _save(fig, path)


def _percent(values: list[Any]) -> np.ndarray:
  """Fractions (None: not measured) as percentages, nan where None."""
  return 100 * np.array([np.nan if v is None else v for v in values], float)


def _series(evidence: list[dict[str, Any]], *path: str) -> list[Any]:
  """One field of every step's evidence (nested by ``path``)."""
  out = []
  for e in evidence:
    for p in path:
      e = e[p]
    out.append(e)
  return out


def _plus(values: list[Any], d: float) -> list[Any]:
  return [None if v is None else v + d for v in values]


def _location_panels(key: str) -> Callable:
  def panel(e, t):
    if key == 'gap_location':
      return ('gap_location', 'test accuracy (%)',
              [('GAPNet location', _series(e, 'accuracy'), _series(e, 'std'))],
              ('needed', _series(e, 'threshold')))
    if key == 'permute_location':
      gap = _series(e, 'gapnet')
      return ('permute_location', 'test accuracy (%)',
              [('GAPNet location', gap, _series(e, 'gapnet_std')),
               ('PermuteNet location', _series(e, 'permutenet'), _series(e, 'permutenet_std'))],
              ('PermuteNet must be below', _plus(gap, -t['permute_location'])))
    loc = _series(e, 'location_retention')
    return ('permute_semantic: (PermuteNet - chance) / (GAPNet - chance)', 'share kept (%)',
            [('semantic share kept', _series(e, 'semantic_retention'), None),
             ('location share kept', loc, None)],
            ('semantic must be above', _plus(loc, t['permute_semantic'])))
  return panel


def _augshift_panel(e, t):
  base = 'standard' if 'standard' in e[0] else 'baseline'
  baseline = _series(e, base, 'consistency')
  sides = [(f'lambda = {e[0]["weight"]:g}', _series(e, 'augshift', 'consistency'),
            _series(e, 'augshift', 'consistency_std')),
           (e[0]['against'], baseline, _series(e, base, 'consistency_std'))]
  if base == 'standard':
    sides.append(('lambda = 0', _series(e, 'baseline', 'consistency'),
                  _series(e, 'baseline', 'consistency_std')))
  return ('augshift: consistency under two uniform placements', 'consistency (%)', sides,
          ('lambda must be above', _plus(baseline, t['augshift'])))


def _overall_panel(e, t):
  random = _series(e, 'random_drop')
  return ('overall_attack: whole-image mIoU drop at N', 'mIoU drop (x100)',
          [('top-N overall', _series(e, 'top_drop'), None), ('random N', random, None)],
          ('top-N must be above', [max(t['min_drop'], t['overall_attack'] * max(r, 0.0))
                                   for r in random]))


def _region_panel(e, t):
  return ('region_attack: own-half minus other-half drop', 'mIoU margin (x100)',
          [('top-N left', _series(e, 'left_margin'), None),
           ('top-N right', _series(e, 'right_margin'), None)],
          ('both must be above', [t['min_drop']] * len(e)))


# Claim -> (evidence per step, thresholds) -> (title, y label, [(label, values, std)],
# (label, the values the rule needs)); panels in this order.
_CLAIM_PANELS = {
    **{k: _location_panels(k) for k in ('gap_location', 'permute_location', 'permute_semantic')},
    'augshift': _augshift_panel, 'overall_attack': _overall_panel, 'region_attack': _region_panel,
}
PANELS = tuple(_CLAIM_PANELS)


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
