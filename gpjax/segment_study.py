"""The segmentation study (job ``segment_study``): for each seed, train DeepLabv3, rank its
position channels and attack them; then a table (mean ± std over seeds) and mean curves.

Seed s trains in ``workdir/runs/seed{s}`` and attacks in ``workdir/attacks/seed{s}``;
a step whose ``results.json`` exists is skipped and an interrupted training run
resumes, so rerunning the command continues a killed study.
"""

import copy
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from gpjax import metrics, study, writers
from gpjax.probes import attack
from gpjax.tasks import segmentation as segment

ROWS = (('clean', 'clean'), ('top-N overall', 'top_overall'), ('random N', 'random'),
        ('top-N left', 'top_left'), ('top-N right', 'top_right'))


def _seed_configs(config: ml_collections.ConfigDict, workdir: str, seed: int):
  run = copy.deepcopy(config.base)
  with run.unlocked():
    run.seed = config.base.seed + seed
  probe = copy.deepcopy(config.attack)
  with probe.unlocked():
    probe.source.workdir = os.path.join(workdir, 'runs', f'seed{seed}')
  return run, probe


def validate_study(config: ml_collections.ConfigDict) -> None:
  """Checks the study fields and the training config before any work."""
  from gpjax.validate import ConfigError, _at_least
  _at_least('study.seeds', config.study.seeds, 1)
  counts = attack.parse_counts(config.attack.attack.counts)
  if config.study.table_count not in counts:
    raise ConfigError(f'config.study.table_count={config.study.table_count} must be one of '
                      f'config.attack.attack.counts ({config.attack.attack.counts}).')
  try:
    segment.validate_config(config.base)
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
  """(table values, Markdown table, mean curves in `attack.save_curves`' format)."""
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


def run_study(config: ml_collections.ConfigDict, workdir: str,
              progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
  """Runs every seed not finished yet; writes results.json, table.md and curves.png.
  ``progress(name, i, n)`` is called before each seed."""
  validate_study(config)
  per_seed, trained = [], []
  for seed in range(config.study.seeds):
    if progress:
      progress(f'seed{seed}', seed, config.study.seeds)
    run, probe = _seed_configs(config, workdir, seed)
    out = study.cached(os.path.join(probe.source.workdir, 'results.json'))
    if out is None:
      print(f'[seed {seed}] training', flush=True)
      out = segment.train_and_evaluate(run, probe.source.workdir)
      if 'preempted_at_step' in out:
        return out
    trained.append(out)
    attack_dir = os.path.join(workdir, 'attacks', f'seed{seed}')
    result = study.cached(os.path.join(attack_dir, 'results.json'))
    if result is None:
      print(f'[seed {seed}] ranking and attack', flush=True)
      result = writers.as_json(attack.run(probe, attack_dir))
    per_seed.append(result)
  n = config.study.table_count
  table, markdown, curves = aggregate(per_seed, n)
  results = writers.as_json({
      'table_count': n, 'num_channels': per_seed[0]['num_channels'], 'table': table,
      'curves': curves, 'test_miou_per_seed': [float(t['test_miou']) for t in trained],
      'config': config.to_dict()})
  if jax.process_index() == 0:
    writers.write_json(os.path.join(workdir, 'results.json'), results)
    with open(os.path.join(workdir, 'table.md'), 'w') as f:
      f.write(markdown)
    m = config.base.model
    attack.save_curves(os.path.join(workdir, 'curves.png'), curves,
                       f'{config.base.data.name}: DeepLabv3-{m.backbone} width {m.width} '
                       f'(C={results["num_channels"]}), mean of {config.study.seeds} seeds')
    print(markdown, flush=True)
  return results
