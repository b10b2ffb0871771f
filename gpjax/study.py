"""A grid of training runs (task x head x padding x grid x seed), resumable, summarised
as a Markdown table and a figure.

Each run trains in ``workdir/runs/<name>`` with ``train.train_and_evaluate``; a run whose
``results.json`` exists is not rerun, and an interrupted one resumes from its checkpoint,
so a killed study continues where it stopped when its command is rerun.
"""

import copy
import itertools
import os
from typing import Any, Callable

import ml_collections
import numpy as np

from gpjax import train, writers
from gpjax.probes import permutation
from gpjax.validate import ConfigError, validate

AXES = ('task', 'head', 'padding', 'grid')


def parse_list(field: str, text: str, cast: Callable[[str], Any] = str) -> list[Any]:
  """'a,b,c' -> [a, b, c]; raises ConfigError naming the field when empty."""
  items = [cast(s.strip()) for s in str(text).split(',') if s.strip()]
  if not items:
    raise ConfigError(f'config.{field}={text!r} is empty; give a comma-separated list.')
  return items


def run_configs(config: ml_collections.ConfigDict) -> list[tuple[str, ml_collections.ConfigDict]]:
  """(name, training config) of every run of the grid, in a fixed order."""
  s = config.study
  tasks, grids = parse_list('study.tasks', s.tasks), parse_list('study.grids', s.grids, int)
  cells = list(itertools.product(parse_list('study.heads', s.heads),
                                 parse_list('study.paddings', s.paddings)))
  if s.probe_heads:  # Unpermuted networks to probe, where the grid lacks them.
    cells += [c for c in itertools.product(parse_list('study.probe_heads', s.probe_heads),
                                           parse_list('study.probe_paddings', s.probe_paddings))
              if c not in cells]
  runs = []
  for task, (head, padding), g, seed in itertools.product(tasks, cells, grids, range(s.seeds)):
    run = copy.deepcopy(config.base)
    with run.unlocked():
      run.task, run.model.head, run.model.padding, run.data.grid = task, head, padding, g
      run.seed = config.base.seed + seed
    runs.append((f'{task}_{head}_{padding}_g{g}_s{seed}', run))
  return runs


def validate_study(config: ml_collections.ConfigDict) -> None:
  """Checks the grid axes and every run's training config before any work."""
  if config.study.seeds < 1:
    raise ConfigError(f'config.study.seeds={config.study.seeds!r} must be >= 1.')
  for name, run in run_configs(config):
    try:
      validate(run)
    except ConfigError as e:
      raise ConfigError(f'run {name}: {e}') from None


def run_study(config: ml_collections.ConfigDict, workdir: str,
              progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
  """Trains every run not finished yet, then writes ``results.json``, ``table.md``
  and ``accuracy.png`` in ``workdir``."""
  validate_study(config)
  runs = run_configs(config)
  results = {}
  for i, (name, run) in enumerate(runs):
    run_dir = os.path.join(workdir, 'runs', name)
    done = os.path.join(run_dir, 'results.json')
    if progress:
      progress(name, i, len(runs))
    if not os.path.exists(done):
      print(f'[{i + 1}/{len(runs)}] {name}', flush=True)
      out = train.train_and_evaluate(run, run_dir)
      if 'preempted_at_step' in out:
        return out
    results[name] = writers.read_json(done)
  summary = summarize(runs, results)
  probes = run_probes(config, workdir, runs)
  if probes:
    summary['probes'] = probes
  writers.write_json(os.path.join(workdir, 'results.json'), summary)
  with open(os.path.join(workdir, 'table.md'), 'w') as f:
    f.write(markdown_table(summary))
    if probes:
      f.write('\n' + probe_table(probes))
  save_figure(os.path.join(workdir, 'accuracy.png'), summary)
  return summary


def summarize(runs, results) -> dict[str, Any]:
  """Mean and std of test accuracy over seeds for every (task, head, padding, grid)."""
  groups: dict[tuple, list[float]] = {}
  for name, run in runs:
    key = (run.task, run.model.head, run.model.padding, run.data.grid)
    groups.setdefault(key, []).append(results[name]['test_accuracy'])
  cells = []
  for key, accs in groups.items():
    g = key[3]
    num_classes = g * g if key[0] == 'location' else results[_first(runs, key)]['num_classes']
    cells.append(dict(zip(AXES, key), accuracies=accs, mean=float(np.mean(accs)),
                      std=float(np.std(accs)), chance=1.0 / num_classes))
  return {'cells': cells, 'runs': {n: results[n]['test_accuracy'] for n, _ in runs}}


def _first(runs, key) -> str:
  return next(n for n, r in runs
              if (r.task, r.model.head, r.model.padding, r.data.grid) == key)


def _columns(summary):
  cols = []
  for c in summary['cells']:
    if (c['task'], c['head']) not in cols:
      cols.append((c['task'], c['head']))
  return cols


def markdown_table(summary: dict[str, Any]) -> str:
  """Rows: padding (and grid); columns: task x head; cells: mean ± std in %."""
  cols = _columns(summary)
  index = {(c['task'], c['head'], c['padding'], c['grid']): c for c in summary['cells']}
  rows = []
  for c in summary['cells']:
    if (c['padding'], c['grid']) not in rows:
      rows.append((c['padding'], c['grid']))
  lines = ['| padding | g | ' + ' | '.join(f'{t} {h}' for t, h in cols) + ' |',
           '|---|---|' + '---|' * len(cols)]
  for padding, g in rows:
    cells = []
    for t, h in cols:
      c = index.get((t, h, padding, g))
      cells.append('' if c is None else
                   f'{100 * c["mean"]:.1f} ± {100 * c["std"]:.1f} (n={len(c["accuracies"])})')
    lines.append(f'| {padding} | {g} | ' + ' | '.join(cells) + ' |')
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
  for ax, g in zip(axes[0], grids):
    cells = [c for c in summary['cells'] if c['grid'] == g]
    paddings = list(dict.fromkeys(c['padding'] for c in cells))
    width = 0.8 / len(cols)
    for j, (t, h) in enumerate(cols):
      pick = {c['padding']: c for c in cells if (c['task'], c['head']) == (t, h)}
      xs = [i + (j - (len(cols) - 1) / 2) * width for i, p in enumerate(paddings) if p in pick]
      ax.bar(xs, [100 * pick[p]['mean'] for p in paddings if p in pick], width,
             yerr=[100 * pick[p]['std'] for p in paddings if p in pick], capsize=2,
             label=f'{t} {h}')
    for t, style in (('location', '--'), ('semantic', ':')):
      chance = [c['chance'] for c in cells if c['task'] == t]
      if chance:
        ax.axhline(100 * chance[0], color='gray', ls=style, lw=1, label=f'{t} chance')
    ax.set_xticks(range(len(paddings)), paddings)
    ax.set_ylim(0, 100)
    ax.set_ylabel('test accuracy (%)')
    ax.set_title(f'grid {g}x{g}')
    ax.legend(fontsize=7, ncol=2)
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
      done = os.path.join(out_dir, 'results.json')
      if not os.path.exists(done):
        probe = copy.deepcopy(config.probe)
        probe.probe.source_workdir = os.path.join(workdir, 'runs', name)
        probe.probe.layer = layer
        permutation.run(probe, out_dir)
      key = (run.task, run.model.head, run.model.padding, run.data.grid, layer)
      groups.setdefault(key, []).append(writers.read_json(done))
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
