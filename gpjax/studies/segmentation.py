"""The segmentation study (job ``segment_study``): the `gpjax.studies.grid` grid over seeds of
DeepLabv3 training runs, with the channel ranking and attack as the evaluator of each run;
then a table (mean ± std over seeds, with how the backbones started) and mean curves.

Seed s trains in ``workdir/runs/seed{s}`` and attacks in ``workdir/attacks/seed{s}`` (its
checkpoints kept by ``train.keep_at`` in ``attacks/seed{s}_step<S>``: ``over_steps``); a
step whose ``results.json`` exists is skipped and an interrupted training run resumes, so
rerunning the command continues a killed study.
"""

import copy
import functools
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from gpjax.checks import at_least
from gpjax.core import figures, metrics, writers
from gpjax.errors import ConfigError
from gpjax.job import Job
from gpjax.probes import attack, ranking, runner
from gpjax.studies import grid as study
from gpjax.tasks import segmentation

ROWS = (('clean', 'clean'), ('top-N overall', 'top_overall'), ('random N', 'random'),
        ('top-N left', 'top_left'), ('top-N right', 'top_right'))


def runs(config: ml_collections.ConfigDict) -> study.Runs:
  """One training run per seed, ``seed<s>``: the grid of this study has only the seed axis."""
  return study.grid(config.base, [('seed{seed}', {})], config.study.seeds)


def check(config: ml_collections.ConfigDict) -> None:
  """Checks the study fields and the training config before any work."""
  at_least('study.seeds', config.study.seeds, 1)
  study.check_train_seeds(config)
  counts = ranking.parse_counts(config.attack.attack.counts)
  if config.study.table_count not in counts:
    raise ConfigError(f'config.study.table_count={config.study.table_count} must be one of '
                      f'config.attack.attack.counts ({config.attack.attack.counts}).')
  try:
    segmentation.check(config.base)
  except ConfigError as e:
    raise ConfigError(f'config.base: {e}') from None


def _at(results: dict[str, Any], key: str, n: int) -> dict[str, float]:
  """mIoU per region of one row at N = n (random: mean over draws)."""
  if key == 'clean':
    return results['clean']
  i = results['counts'].index(n)
  if key == 'random':
    return {r: results['random'][r]['mean'][i] for r in metrics.REGIONS}
  return {r: results[key][r][i] for r in metrics.REGIONS}


def aggregate(per_seed: list[dict[str, Any]], n: int) -> tuple[dict[str, Any], str, dict]:
  """(table values, Markdown table, mean curves in `figures.save_attack_curves`' format)."""
  table = {}
  for label, key in ROWS:
    values = np.array([[_at(res, key, n)[r] for r in metrics.REGIONS] for res in per_seed])
    table[label] = {'mean': dict(zip(metrics.REGIONS, values.mean(0).tolist())),
                    'std': dict(zip(metrics.REGIONS, values.std(0).tolist()))}
  lines = [f'| mIoU (N = {n}) | ' + ' | '.join(metrics.REGIONS) + ' |',
           '|---' * (len(metrics.REGIONS) + 1) + '|']
  for label, _ in ROWS:
    row = table[label]
    cells = [f'{row["mean"][r]:.3f} ± {row["std"][r]:.3f}' for r in metrics.REGIONS]
    lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
  first = per_seed[0]
  counts = first['counts']
  curves = {'regions': first['regions'], 'counts': counts,
            'clean': {r: float(np.mean([res['clean'][r] for res in per_seed]))
                      for r in metrics.REGIONS}}
  for kind in attack.KINDS:
    curves[f'top_{kind}'] = {r: np.mean([res[f'top_{kind}'][r] for res in per_seed],
                                        0).tolist() for r in metrics.REGIONS}
  curves['random'] = {}
  for r in metrics.REGIONS:  # Spread over every draw of every seed.
    draws = np.concatenate([np.asarray(res['random'][r]['draws']).reshape(-1, len(counts))
                            for res in per_seed])
    curves['random'][r] = {'mean': draws.mean(0).tolist() if len(draws) else [],
                           'std': draws.std(0).tolist() if len(draws) else []}
  return table, '\n'.join(lines) + '\n', curves


def attack_run(config: ml_collections.ConfigDict, workdir: str, name: str,
               run: ml_collections.ConfigDict, run_dir: str) -> dict[str, Any]:
  """Evaluator: ranks and attacks the trained run ``run_dir`` at its newest checkpoint (in
  ``workdir/attacks/<name>``) and at each one kept by ``train.keep_at``: ``{'steps',
  'results'}``, the newest last."""

  def compute(step, out):
    probe = copy.deepcopy(config.attack)
    probe.source.workdir, probe.source.step = run_dir, step
    print(f'[{name}] ranking and attack' + (f' at step {step}' if step else ''), flush=True)
    return runner.run_probe(attack.PROBE, probe, out)

  measured = study.at_kept_steps(run, run_dir, os.path.join(workdir, 'attacks', name), compute)
  return {'steps': [s for s, _ in measured], 'results': [r for _, r in measured]}


def over_steps(evaluations: list[dict[str, Any]], n: int) -> dict[str, Any]:
  """``{'steps', 'tables'}``: `aggregate`'s table at every step all seeds' attacks measured."""
  steps = sorted(set.intersection(*(set(e['steps']) for e in evaluations)))
  tables = [aggregate([e['results'][e['steps'].index(s)] for e in evaluations], n)[0]
            for s in steps]
  return {'steps': steps, 'tables': tables}


def run_study(config: ml_collections.ConfigDict, workdir: str,
              progress: study.Progress | None = None, share: str = 'alone') -> dict[str, Any]:
  """Trains and attacks every seed not finished yet; writes results.json, table.md and
  curves.png. ``progress(name, i, n)`` is called before each seed; with ``share`` 'help'
  (`study.run_grid`'s), only does the cells no other process holds and returns {}."""
  check(config)
  grid = runs(config)
  outcome = study.run_grid(grid, workdir, segmentation.train_and_evaluate,
                           {'attack': functools.partial(attack_run, config, workdir)}, progress,
                           study.cell_trainer(config, segmentation.TASK), share)
  if outcome.preempted is not None or share == 'help':
    return outcome.preempted or {}
  evaluations = [outcome.evaluations['attack'][name] for name, _ in grid]
  per_seed = [e['results'][-1] for e in evaluations]
  n = config.study.table_count
  table, markdown, curves = aggregate(per_seed, n)
  pretrained = config.base.model.pretrained_backbone
  markdown += '\nBackbone of every seed: ' + (
      f'started from the weights in `{pretrained}`.\n' if pretrained
      else 'from scratch (random initialisation).\n')
  results = writers.as_json({
      'table_count': n, 'num_channels': per_seed[0]['num_channels'],
      'backbone_init': segmentation.backbone_init(config.base), 'table': table,
      'curves': curves, 'over_steps': over_steps(evaluations, n),
      'test_miou_per_seed': [float(outcome.results[name]['test_miou']) for name, _ in grid],
      'config': config.to_dict()})
  m = config.base.model
  title = (f'{config.base.data.name}: DeepLabv3-{m.backbone} width {m.width} '
           f'(C={results["num_channels"]}), mean of {config.study.seeds} seeds')
  study.write_outputs(workdir, results, markdown, {
      'curves.png': lambda path: figures.save_attack_curves(path, curves, title)})
  if jax.process_index() == 0:
    print(markdown, flush=True)
  return results


JOBS = {'segment_study': Job(run_study, check, 'DeepLabv3 runs over seeds, their position '
                                               'channels ranked and attacked')}
