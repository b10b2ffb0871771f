"""The location study (job ``study``, configs/study.py): GAPNet vs PermuteNet over tasks,
paddings and grids on the `gpjax.studies.grid` runner, the paper's layer protocol
(PermuteNets trained and tested with orderings at each layer), and one evaluator:
permutation probes of the unpermuted runs at ``study.probe_layers``.
"""

import copy
import functools
import itertools
import math
import os
from typing import Any, Mapping

import ml_collections
import numpy as np

from gpjax import checks
from gpjax.job import Job
from gpjax.models.classifier import HEADS, PERMUTE_LAYERS
from gpjax.probes import permutation, runner
from gpjax.studies import claims, grid
from gpjax.studies import figures as study_figures
from gpjax.studies.grid import AXES, Progress, Runs
from gpjax.tasks import classification


def layer_configs(config: ml_collections.ConfigDict) -> Runs:
  """The paper's layer protocol: PermuteNets trained AND tested with the orderings at
  ``model.permute_layer`` = each of ``study.layer_protocol`` (zero padding, every task and
  grid), named ``<task>_permutenet_zero_g<g>_layer<l>_s<seed>``; the layer of the base
  config is the grid's own PermuteNet cell (`run_configs`), which keeps its name and run."""
  s = config.study
  if not s.layer_protocol:
    return []
  cells = []
  for task, g, layer in itertools.product(
      checks.items('study.tasks', s.tasks), checks.items('study.grids', s.grids, int),
      checks.items('study.layer_protocol', s.layer_protocol, int, empty=True)):
    fields = {'task': task, 'model.head': 'permutenet', 'model.padding': 'zero', 'data.grid': g,
              'model.permute_layer': layer}
    tag = '' if layer == config.base.model.permute_layer else f'layer{layer}_'
    cells.append((f'{task}_permutenet_zero_g{g}_{tag}s{{seed}}', fields))
  return grid.grid(config.base, cells, s.seeds)


def check(config: ml_collections.ConfigDict) -> None:
  """Checks the grid axes, the heads, the probed layers and every run's training config
  before any work."""
  s = config.study
  for field in ('probe_layers', 'layer_protocol'):
    for layer in checks.items(f'study.{field}', s[field], int, empty=True):
      checks.one_of(f'study.{field}', layer, PERMUTE_LAYERS)
  for field in ('heads', 'probe_heads', 'plain_heads'):
    for head in checks.items(f'study.{field}', s[field], empty=field != 'heads'):
      checks.one_of(f'study.{field}', head, HEADS)
  grid.validate_runs(config, all_runs(config))


def all_runs(config: ml_collections.ConfigDict) -> Runs:
  """`run_configs` then the layer protocol's runs that the grid lacks."""
  runs = grid.run_configs(config)
  names = {name for name, _ in runs}
  return runs + [(n, r) for n, r in layer_configs(config) if n not in names]


def probe_layers(config: ml_collections.ConfigDict, name: str, run: ml_collections.ConfigDict,
                 run_dir: str) -> dict[int, dict[str, Any]]:
  """Evaluator: layer -> the permutation probe of ``run`` there (``run_dir/probe_layer<L>``),
  for runs whose head and padding are in ``study.probe_heads`` / ``probe_paddings``."""
  s = config.study
  if (run.model.head not in checks.items('study.probe_heads', s.probe_heads, empty=True) or
      run.model.padding not in checks.items('study.probe_paddings', s.probe_paddings)):
    return {}
  out = {}
  for layer in checks.items('study.probe_layers', s.probe_layers, int, empty=True):
    probe = copy.deepcopy(config.probe)
    probe.probe.source_workdir = run_dir
    probe.probe.layer = layer
    out_dir = os.path.join(run_dir, f'probe_layer{layer}')
    out[layer] = grid.cached_or(out_dir, functools.partial(runner.run_probe, permutation.PROBE,
                                                           probe, out_dir))
  return out


def probe_rows(runs: Runs, probes: Mapping[str, dict[int, dict[str, Any]]]
               ) -> list[dict[str, Any]]:
  """One row per (task, head, padding, grid, layer) of the probed runs: accuracy
  unpermuted and under random orderings, each averaged over seeds."""
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for name, run in runs:
    for layer, result in probes[name].items():
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
  lines.append('Our probe (not in the paper): test accuracy in % of networks trained without '
               'permutation, evaluated with '
               'random channel orderings at the input of stage 1..4 or of the Dense head (5); '
               'mean over seeds of the mean over orderings (± std over seeds). Retained = '
               'random / unpermuted.')
  return '\n'.join(lines) + '\n'


def layer_rows(runs: Runs, results: Mapping[str, dict[str, Any]], summary: dict[str, Any],
               margin: float) -> list[dict[str, Any]]:
  """One row per (task, grid, layer) of `layer_configs`: the PermuteNet's test accuracy (the
  mean over its test orderings) over seeds, its identity-ordering accuracy, and the share of
  the zero-padding GAPNet's above-chance accuracy it keeps (`claims.retention`; None
  without that cell or when the GAPNet is less than ``margin`` above chance)."""
  gapnet = {(c['task'], c['grid']): c for c in summary['cells']
            if c['head'] == 'gapnet' and c['padding'] == 'zero'}
  groups: dict[tuple, list[str]] = {}
  for name, run in runs:
    groups.setdefault((run.task, run.data.grid, run.model.permute_layer), []).append(name)
  rows = []
  for (task, g, layer), names in groups.items():
    accs = [results[n]['test_accuracy'] for n in names]
    num_classes = g * g if task == 'location' else results[names[0]]['num_classes']
    chance, ref = 1.0 / num_classes, gapnet.get((task, g))
    mean = float(np.mean(accs))
    rows.append({'task': task, 'grid': g, 'layer': layer, 'accuracies': accs, 'mean': mean,
                 'std': float(np.std(accs)), 'chance': chance,
                 'identity_mean': float(np.mean([results[n]['test_accuracy_identity']
                                                 for n in names])),
                 'gapnet_mean': None if ref is None else ref['mean'],
                 'kept': None if ref is None else _number(
                     claims.retention(mean, ref['mean'], chance, margin))})
  return rows


def _number(x: float) -> float | None:
  return None if math.isnan(x) else float(x)


def layer_table(rows: list[dict[str, Any]]) -> str:
  """Rows: task, grid, layer; PermuteNet accuracy, identity ordering, share kept."""
  lines = ['| task | g | layer | PermuteNet | identity ordering | GAPNet | kept |',
           '|---|---|---|---|---|---|---|']
  for r in rows:
    kept = ('' if r['gapnet_mean'] is None else 'n/a' if r['kept'] is None else
            f'{100 * r["kept"]:.0f}%')
    gap = '' if r['gapnet_mean'] is None else f'{100 * r["gapnet_mean"]:.1f}'
    lines.append(f'| {r["task"]} | {r["grid"]} | {r["layer"]} | {100 * r["mean"]:.1f} ± '
                 f'{100 * r["std"]:.1f} (n={len(r["accuracies"])}) | '
                 f'{100 * r["identity_mean"]:.1f} | {gap} | {kept} |')
  lines.append('')
  lines.append("The paper's protocol (the official code's layer experiment): PermuteNets "
               'trained and tested with a random channel ordering at the input of stage 1..4 '
               'or of the Dense head (5), zero padding. Test accuracy in %: the mean over the '
               'test orderings (`eval.orderings`), mean ± std over seeds; identity ordering '
               'beside it; kept = (PermuteNet - chance) / (GAPNet - chance), GAPNet with zero '
               'padding on the same task (n/a: GAPNet less than 10 points above chance).')
  return '\n'.join(lines) + '\n'


def run_study(config: ml_collections.ConfigDict, workdir: str,
              progress: Progress | None = None, share: str = 'alone') -> dict[str, Any]:
  """The location study: trains the grid, probes the unpermuted runs, writes
  ``results.json``, ``table.md`` and ``accuracy.png``; returns the summary (with ``share``
  'help', `grid.run_grid`'s, only does the cells no other process holds and returns {})."""
  check(config)
  runs = grid.run_configs(config)
  evaluators = {}
  if config.study.probe_heads:  # () = no probes.
    evaluators['probes'] = functools.partial(probe_layers, config)
  outcome = grid.run_grid(all_runs(config), workdir, classification.train_and_evaluate,
                          evaluators, progress, grid.cell_trainer(config, classification.TASK),
                          share)
  if outcome.preempted is not None or share == 'help':
    return outcome.preempted or {}
  summary = grid.summarize(runs, outcome.results)
  table = grid.markdown_table(summary)
  figures = {'accuracy.png': functools.partial(study_figures.save_accuracy_figure,
                                               summary=summary)}
  layers = layer_rows(layer_configs(config), outcome.results, summary,
                      config.study.retention_margin)
  if layers:
    summary['layer_protocol'] = layers
    table += '\n' + layer_table(layers)
    figures['layer_protocol.png'] = functools.partial(study_figures.save_layer_figure,
                                                      rows=layers)
  probes = probe_rows(runs, outcome.evaluations['probes']) if evaluators else []
  if probes:
    summary['probes'] = probes
    table += '\n' + probe_table(probes)
  grid.write_outputs(workdir, summary, table, figures)
  return summary


JOBS = {'study': Job(run_study, check, 'GAPNet vs PermuteNet over tasks, paddings and grids, '
                                       'the layer protocol and permutation probes')}
