"""A grid of training runs (task x head x padding x grid x seed), resumable, summarised
as a Markdown table and a figure.

Each run trains in ``workdir/runs/<name>`` with ``train.train_and_evaluate``; a run whose
``results.json`` exists is not rerun, and an interrupted one resumes from its checkpoint,
so a killed study continues where it stopped when its command is rerun.

Two optional extensions, passed by the job that runs the study (none for configs/study.py):
``sweep`` adds a grid axis over any training-config field (e.g. AugShift's
``augshift.weight``), and ``evaluate(name, run_config, run_dir) -> {metric: float}`` is
called on every trained run; its metrics are summarised over seeds like the accuracy.
"""

import copy
import functools
import itertools
import os
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from gpjax import writers
from gpjax.probes import permutation
from gpjax.tasks import classification
from gpjax.validate import ConfigError, validate

AXES = ('task', 'head', 'padding', 'grid')
Sweep = tuple[str, Sequence[Any]]  # (dotted training-config field, its values): one more axis.
Evaluate = Callable[[str, ml_collections.ConfigDict, str], dict[str, float]]


def parse_list(field: str, text: str, cast: Callable[[str], Any] = str) -> list[Any]:
  """'a,b,c' -> [a, b, c]; raises ConfigError naming the field when empty."""
  items = [cast(s.strip()) for s in str(text).split(',') if s.strip()]
  if not items:
    raise ConfigError(f'config.{field}={text!r} is empty; give a comma-separated list.')
  return items


def parse_sweep(base: ml_collections.ConfigDict, field: str, text: str,
                name: str = 'study.sweep_values') -> Sweep:
  """``(field, values)`` with each of the comma-separated ``text`` cast to the type of
  ``field`` (dotted, e.g. 'augshift.weight') in the training config ``base``."""
  try:
    kind = type(config_field(base, field))
  except (AttributeError, KeyError):
    raise ConfigError(f'sweep field {field!r} is not a field of the training config.') from None
  cast = (lambda v: v.lower() in ('1', 'true')) if kind is bool else kind
  try:
    return field, parse_list(name, text, cast)
  except ConfigError:
    raise
  except ValueError as e:  # A value the field's type cannot parse.
    raise ConfigError(f'config.{name}={text!r}: {e}') from None


def config_field(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value of a dotted field, e.g. ``config_field(run, 'augshift.weight')``."""
  return functools.reduce(lambda c, k: c[k], field.split('.'), config)


def _sweep_label(sweep: Sweep, value: Any) -> str:
  leaf = sweep[0].rpartition('.')[2]
  return f'{leaf}{value:g}' if isinstance(value, float) else f'{leaf}{value}'


def run_configs(config: ml_collections.ConfigDict,
                sweep: Sweep | None = None) -> list[tuple[str, ml_collections.ConfigDict]]:
  """(name, training config) of every run of the grid, in a fixed order; with a
  ``sweep``, every value of its field for each cell (named ``..._g3_weight0.1_s0``)."""
  s = config.study
  tasks, grids = parse_list('study.tasks', s.tasks), parse_list('study.grids', s.grids, int)
  cells = list(itertools.product(parse_list('study.heads', s.heads),
                                 parse_list('study.paddings', s.paddings)))
  if s.probe_heads:  # Unpermuted networks to probe, where the grid lacks them.
    cells += [c for c in itertools.product(parse_list('study.probe_heads', s.probe_heads),
                                           parse_list('study.probe_paddings', s.probe_paddings))
              if c not in cells]
  runs = []
  values = [None] if sweep is None else list(sweep[1])
  for task, (head, padding), g, value, seed in itertools.product(tasks, cells, grids, values,
                                                                 range(s.seeds)):
    run = copy.deepcopy(config.base)
    with run.unlocked():
      run.task, run.model.head, run.model.padding, run.data.grid = task, head, padding, g
      run.seed = config.base.seed + seed
      if sweep is not None:
        parent, _, leaf = sweep[0].rpartition('.')
        (config_field(run, parent) if parent else run)[leaf] = value
    label = '' if sweep is None else _sweep_label(sweep, value) + '_'
    runs.append((f'{task}_{head}_{padding}_g{g}_{label}s{seed}', run))
  return runs


def validate_study(config: ml_collections.ConfigDict, sweep: Sweep | None = None) -> None:
  """Checks the grid axes and every run's training config before any work."""
  if config.study.seeds < 1:
    raise ConfigError(f'config.study.seeds={config.study.seeds!r} must be >= 1.')
  for name, run in run_configs(config, sweep):
    try:
      validate(run)
    except ConfigError as e:
      raise ConfigError(f'run {name}: {e}') from None


def run_study(config: ml_collections.ConfigDict, workdir: str,
              progress: Callable[[str, int, int], None] | None = None, *,
              sweep: Sweep | None = None, evaluate: Evaluate | None = None) -> dict[str, Any]:
  """Trains every run not finished yet (then calls ``evaluate`` on it, if given), then
  writes ``results.json``, ``table.md`` and ``accuracy.png`` in ``workdir`` (and, with a
  sweep and an evaluator, ``metrics.png``: each metric against the sweep's values)."""
  validate_study(config, sweep)
  runs = run_configs(config, sweep)
  results, evaluations = {}, {}
  for i, (name, run) in enumerate(runs):
    run_dir = os.path.join(workdir, 'runs', name)
    if progress:
      progress(name, i, len(runs))
    results[name] = cached(os.path.join(run_dir, 'results.json'))
    if results[name] is None:
      print(f'[{i + 1}/{len(runs)}] {name}', flush=True)
      out = classification.train_and_evaluate(run, run_dir)
      if 'preempted_at_step' in out:
        return out
      results[name] = writers.as_json(out)
    if evaluate is not None:
      evaluations[name] = evaluate(name, run, run_dir)
  summary = summarize(runs, results, sweep, evaluations)
  probes = run_probes(config, workdir, runs)
  if probes:
    summary['probes'] = probes
  if jax.process_index() == 0:
    writers.write_json(os.path.join(workdir, 'results.json'), summary)
    with open(os.path.join(workdir, 'table.md'), 'w') as f:
      f.write(markdown_table(summary))
      if evaluations:
        f.write('\n' + metric_table(summary))
      if probes:
        f.write('\n' + probe_table(probes))
    save_figure(os.path.join(workdir, 'accuracy.png'), summary)
    if evaluations and sweep is not None:
      save_metric_figure(os.path.join(workdir, 'metrics.png'), summary)
  return summary


def cached(path: str) -> dict[str, Any] | None:
  """The results.json at ``path`` if a finished step wrote it, else None. Steps that
  run now use their returned results instead of the file: with several processes only
  process 0 writes it, and the others must not wait for it."""
  return writers.read_json(path) if os.path.exists(path) else None


def summarize(runs, results, sweep: Sweep | None = None,
              evaluations: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
  """Mean and std of test accuracy (and of each evaluated metric) over seeds for every
  (task, head, padding, grid) and sweep value."""
  groups: dict[tuple, list[str]] = {}
  for name, run in runs:
    key = (run.task, run.model.head, run.model.padding, run.data.grid)
    if sweep is not None:
      key += (config_field(run, sweep[0]),)
    groups.setdefault(key, []).append(name)
  cells = []
  for key, names in groups.items():
    accs = [results[n]['test_accuracy'] for n in names]
    g = key[3]
    num_classes = g * g if key[0] == 'location' else results[names[0]]['num_classes']
    cell = dict(zip(AXES, key), accuracies=accs, mean=float(np.mean(accs)),
                std=float(np.std(accs)), chance=1.0 / num_classes)
    if sweep is not None:
      cell['sweep'] = key[4]
    if evaluations:
      cell['metrics'] = {m: {'values': v, 'mean': float(np.mean(v)), 'std': float(np.std(v))}
                         for m in evaluations[names[0]]
                         for v in [[evaluations[n][m] for n in names]]}
    cells.append(cell)
  summary = {'cells': cells, 'runs': {n: results[n]['test_accuracy'] for n, _ in runs}}
  if sweep is not None:
    summary['sweep_field'] = sweep[0]
  if evaluations:
    summary['evaluations'] = evaluations
  return summary


def _columns(summary):
  cols = []
  for c in summary['cells']:
    if (c['task'], c['head']) not in cols:
      cols.append((c['task'], c['head']))
  return cols


def markdown_table(summary: dict[str, Any]) -> str:
  """Rows: padding (and grid); columns: task x head; cells: mean ± std in %."""
  cols = _columns(summary)
  field = summary.get('sweep_field')  # Absent without a sweep: no column for it.
  index = {(c['task'], c['head'], c['padding'], c['grid'], c.get('sweep')): c
           for c in summary['cells']}
  rows = []
  for c in summary['cells']:
    if (c['padding'], c['grid'], c.get('sweep')) not in rows:
      rows.append((c['padding'], c['grid'], c.get('sweep')))
  extra = '' if field is None else f'{field} | '
  lines = ['| padding | g | ' + extra + ' | '.join(f'{t} {h}' for t, h in cols) + ' |',
           '|---|---|' + ('' if field is None else '---|') + '---|' * len(cols)]
  for padding, g, value in rows:
    cells = []
    for t, h in cols:
      c = index.get((t, h, padding, g, value))
      cells.append('' if c is None else
                   f'{100 * c["mean"]:.1f} ± {100 * c["std"]:.1f} (n={len(c["accuracies"])})')
    lines.append(f'| {padding} | {g} | ' + ('' if field is None else f'{value} | ') +
                 ' | '.join(cells) + ' |')
  chance = sorted({(c['task'], c['grid'], c['chance']) for c in summary['cells']})
  lines.append('')
  lines.append('Test accuracy in %, mean ± std over seeds. Chance: ' + ', '.join(
      f'{t} g={g} {100 * p:.1f}%' for t, g, p in chance) + '.')
  return '\n'.join(lines) + '\n'


def save_figure(path: str, summary: dict[str, Any]) -> None:
  """Grouped bars: accuracy per padding, one bar per task x head, chance dashed."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  cols = _columns(summary)
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
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def metric_table(summary: dict[str, Any]) -> str:
  """One row per cell of the grid: test accuracy and each evaluated metric, mean ± std."""
  field = summary.get('sweep_field')
  metrics = list(summary['cells'][0]['metrics'])
  head = ['task', 'head', 'padding', 'g'] + ([field] if field else []) + ['test accuracy']
  lines = ['| ' + ' | '.join(head + metrics) + ' |', '|' + '---|' * (len(head) + len(metrics))]
  for c in summary['cells']:
    values = [f'{c["mean"]:.3f} ± {c["std"]:.3f}'] + [
        f'{c["metrics"][m]["mean"]:.3f} ± {c["metrics"][m]["std"]:.3f}' for m in metrics]
    keys = [c['task'], c['head'], c['padding'], str(c['grid'])] + (
        [str(c['sweep'])] if field else [])
    lines.append('| ' + ' | '.join(keys + values) + ' |')
  lines.append('')
  lines.append(f'Mean ± std over seeds (n={len(c["accuracies"])} per row); accuracies as '
               'fractions. The evaluator defines the metrics.')
  return '\n'.join(lines) + '\n'


def save_metric_figure(path: str, summary: dict[str, Any]) -> None:
  """One panel per metric (test accuracy first) against the sweep's values, one line
  per (task, head, padding, grid), error bars = std over seeds."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
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
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def run_probes(config: ml_collections.ConfigDict, workdir: str, runs) -> list[dict[str, Any]]:
  """Probes each trained run whose head and padding are in ``study.probe_heads``
  and ``study.probe_paddings`` with random
  channel orderings at every layer of ``study.probe_layers``; returns one row
  per (task, head, padding, grid, layer) with accuracies averaged over seeds."""
  s = config.study
  if not s.probe_heads:
    return []
  heads = parse_list('study.probe_heads', s.probe_heads)
  paddings = parse_list('study.probe_paddings', s.probe_paddings)
  layers = parse_list('study.probe_layers', s.probe_layers, int)
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for name, run in runs:
    if run.model.head not in heads or run.model.padding not in paddings:
      continue
    for layer in layers:
      out_dir = os.path.join(workdir, 'runs', name, f'probe_layer{layer}')
      result = cached(os.path.join(out_dir, 'results.json'))
      if result is None:
        probe = copy.deepcopy(config.probe)
        probe.probe.source_workdir = os.path.join(workdir, 'runs', name)
        probe.probe.layer = layer
        result = writers.as_json(permutation.run(probe, out_dir))
      key = (run.task, run.model.head, run.model.padding, run.data.grid, layer)
      groups.setdefault(key, []).append(result)
  rows = []
  for key, results in groups.items():
    identity = [r['accuracy_identity'] for r in results]
    permuted = [r['summary']['mean'] for r in results]
    rows.append(dict(zip(AXES + ('layer',), key), identity_mean=float(np.mean(identity)),
                     permuted_mean=float(np.mean(permuted)), permuted_std=float(np.std(permuted)),
                     retained=float(np.mean(permuted) / max(np.mean(identity), 1e-9)),
                     chance=results[0]['chance'], seeds=len(results)))
  return rows


def probe_table(rows: list[dict[str, Any]]) -> str:
  """Rows: layer; per task: unpermuted accuracy, accuracy under random orderings."""
  lines = ['| task | head | padding | g | layer | unpermuted | random orderings | retained |',
           '|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f'| {r["task"]} | {r["head"]} | {r["padding"]} | {r["grid"]} | {r["layer"]} | '
                 f'{100 * r["identity_mean"]:.1f} | {100 * r["permuted_mean"]:.1f} ± '
                 f'{100 * r["permuted_std"]:.1f} | {100 * r["retained"]:.0f}% |')
  lines.append('')
  lines.append('Test accuracy in % of networks trained without permutation, evaluated with '
               'random channel orderings at the input of stage 1..4 or of the Dense head (5); '
               'mean over seeds of the mean over orderings (± std over seeds). Retained = '
               'random / unpermuted.')
  return '\n'.join(lines) + '\n'
