"""The paper's claims as verdicts computed from the studies' numbers.

Each ``judge_*`` takes a study's ``results.json`` summary and the thresholds of
``config.claims`` (configs/reproduce.py) and returns ``{'holds': bool, 'evidence':
{...}, 'rule': str}``: the numbers the verdict read and the rule, in words, that read
them. Accuracies and mIoU are fractions.
"""

import math
from typing import Any

import ml_collections

Claim = dict[str, Any]

# Key -> the claim as the paper states it (the report's headings).
STATEMENTS = {
    'gap_location': 'A CNN with global average pooling still knows where the image is',
    'permute_location': 'Position lives in channel order: permuting channels destroys location',
    'permute_semantic': 'Semantics do not: permuting channels costs far less on classification',
    'augshift': 'AugShift makes the output more translation-invariant',
    'overall_attack': 'Zeroing the top-ranked position channels hurts segmentation more than '
                      'zeroing random channels',
    'region_attack': 'Zeroing left- (right-) specific channels hurts the left (right) half most',
}


def verdict(claim: Claim) -> str:
  """The verdict of a judged claim in words."""
  return 'holds' if claim['holds'] else 'does not hold'


def cell(summary: dict[str, Any], task: str, head: str, padding: str,
         grid: int) -> dict[str, Any]:
  """The location study's cell of (task, head, padding, grid); KeyError names it."""
  for c in summary['cells']:
    if (c['task'], c['head'], c['padding'], c['grid']) == (task, head, padding, grid):
      return c
  raise KeyError(f'the study has no cell task={task} head={head} padding={padding} '
                 f'grid={grid}')


def retention(permuted: float, full: float, chance: float, margin: float) -> float:
  """Share of the above-chance accuracy that PermuteNet keeps; nan unless GAPNet is at
  least ``margin`` above chance (below that the share is noise over a tiny number)."""
  return (permuted - chance) / (full - chance) if full - chance >= margin else math.nan


def judge_location(summary: dict[str, Any], t: ml_collections.ConfigDict) -> dict[str, Claim]:
  """gap_location, permute_location and permute_semantic from the location study."""
  g = t.grid
  gap, perm = (cell(summary, 'location', h, 'zero', g) for h in ('gapnet', 'permutenet'))
  sem_gap, sem_perm = (cell(summary, 'semantic', h, 'zero', g) for h in ('gapnet', 'permutenet'))
  chance = gap['chance']
  needed = chance + t.gap_location * (1 - chance)
  by_padding = {c['padding']: c['mean'] for c in summary['cells']
                if (c['task'], c['head'], c['grid']) == ('location', 'gapnet', g)}
  out = {'gap_location': dict(
      holds=gap['mean'] >= needed,
      rule=f'GAPNet (zero padding) location accuracy >= chance + {t.gap_location:g} x '
           f'(1 - chance) = {needed:.3f}',
      evidence=dict(accuracy=gap['mean'], std=gap['std'], seeds=len(gap['accuracies']),
                    chance=chance, threshold=needed, gapnet_location_by_padding=by_padding))}
  loc_drop = gap['mean'] - perm['mean']
  out['permute_location'] = dict(
      holds=loc_drop >= t.permute_location,
      rule=f'GAPNet minus PermuteNet location accuracy (zero padding) >= {t.permute_location:g}',
      evidence=dict(gapnet=gap['mean'], permutenet=perm['mean'], gapnet_std=gap['std'],
                    permutenet_std=perm['std'], drop=loc_drop, chance=chance))
  loc_kept = retention(perm['mean'], gap['mean'], chance, t.retention_margin)
  sem_kept = retention(sem_perm['mean'], sem_gap['mean'], sem_gap['chance'],
                       t.retention_margin)
  margin = sem_kept - loc_kept
  evidence = dict(semantic_gapnet=sem_gap['mean'], semantic_permutenet=sem_perm['mean'],
                  semantic_drop=sem_gap['mean'] - sem_perm['mean'], location_drop=loc_drop,
                  semantic_retention=sem_kept, location_retention=loc_kept,
                  semantic_chance=sem_gap['chance'], location_chance=chance)
  evidence.update({f'probe_{r["task"]}_layer{r["layer"]}_retained': r['retained']
                   for r in summary.get('probes', []) if r['grid'] == g})
  plain = {c['head']: c for c in summary['cells']
           if (c['task'], c['padding'], c['grid']) == ('semantic', 'zero', 1)}
  if 'gapnet' in plain and 'permutenet' in plain:  # Beside the rule: the plain image (g=1).
    evidence.update(plain_gapnet=plain['gapnet']['mean'],
                    plain_permutenet=plain['permutenet']['mean'],
                    plain_retention=retention(plain['permutenet']['mean'], plain['gapnet']['mean'],
                                              plain['gapnet']['chance'], t.retention_margin))
  out['permute_semantic'] = dict(
      holds=not math.isnan(margin) and margin >= t.permute_semantic,
      rule='PermuteNet keeps a larger share of the above-chance accuracy on the semantic task '
           f'than on the location task, by >= {t.permute_semantic:g} (share = (PermuteNet - '
           'chance) / (GAPNet - chance))',
      evidence=evidence)
  return out


def at_step(summary: dict[str, Any], index: int) -> dict[str, Any]:
  """The summary as it stood at the ``index``-th step of its cells' curves: each cell's
  mean, std and accuracies replaced by that evaluation's; no probes (final only)."""
  cells = []
  for c in summary['cells']:
    curve = c['curve']
    cells.append(dict(c, mean=curve['mean'][index], std=curve['std'][index],
                      accuracies=[v[index] for v in curve['values']]))
  return {'cells': cells}


def _per_claim(steps: list[int], judged: list[dict[str, Claim]]) -> dict[str, Any]:
  """``{'<claim>': {'steps', 'holds', 'evidence'}}`` from one judgement per step."""
  return {key: {'steps': list(steps), 'holds': [j[key]['holds'] for j in judged],
                'evidence': [j[key]['evidence'] for j in judged]} for key in judged[0]}


def location_over_steps(summary: dict[str, Any],
                        t: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """`judge_location` at every step the cells it reads all evaluated (their curves):
  ``{'<claim>': {'steps', 'holds', 'evidence'}}``; None when a cell has no curve or the
  steps differ. The verdicts stay those of the final step."""
  g = t.grid
  read = [c for c in summary['cells'] if c['grid'] == g and c['padding'] == 'zero' and
          c['head'] in ('gapnet', 'permutenet')]
  if not read or any('curve' not in c for c in read):
    return None
  steps = read[0]['curve']['steps']
  if any(c['curve']['steps'] != steps for c in read):
    return None
  cells = {'cells': read}
  return _per_claim(steps, [judge_location(at_step(cells, i), t) for i in range(len(steps))])


def trend(values: list[float], flat: float = 0.01) -> str:
  """The shape of a curve over its finite values: 'growing', 'falling' or 'flat' (last minus
  first within ``flat``); 'rising, then falling' ('falling, then rising') when an interior
  value lies above (below) both ends by more than ``flat``."""
  finite = [v for v in values if v is not None and math.isfinite(v)]
  if len(finite) < 2:
    return 'not measurable'
  first, last, inner = finite[0], finite[-1], finite[1:-1]
  if inner and max(inner) - max(first, last) > flat:
    return 'rising, then falling'
  if inner and min(first, last) - min(inner) > flat:
    return 'falling, then rising'
  change = last - first
  return 'flat' if abs(change) < flat else 'growing' if change > 0 else 'falling'


def judge_augshift(summary: dict[str, Any], t: ml_collections.ConfigDict) -> dict[str, Claim]:
  """augshift: consistency of lambda = t.augshift_weight against standard training (one
  canvas per image, cross-entropy only: the method's baseline), with the gain over lambda 0
  (the same two copies without the MSE: the loss's own share) beside it. A study without
  standard runs is judged against lambda 0."""
  zero = next(c for c in summary['cells'] if c['sweep'] == 0)
  aug = next(c for c in summary['cells'] if c['sweep'] == t.augshift_weight)
  standard = summary['standard'][0] if summary.get('standard') else None

  def numbers(c):
    return {'test_accuracy': c['mean'], **{m: v['mean'] for m, v in c['metrics'].items()},
            'consistency_std': c['metrics']['consistency']['std']}

  def gain(c):
    return aug['metrics']['consistency']['mean'] - c['metrics']['consistency']['mean']

  against = 'standard training' if standard is not None else 'lambda = 0'
  evidence = dict(weight=t.augshift_weight, against=against,
                  consistency_gain=gain(standard if standard is not None else zero),
                  loss_gain=gain(zero), baseline=numbers(zero), augshift=numbers(aug))
  if standard is not None:
    evidence['standard'] = numbers(standard)
  return {'augshift': dict(
      holds=evidence['consistency_gain'] >= t.augshift,
      rule=f'consistency with lambda = {t.augshift_weight:g} minus with {against} >= '
           f'{t.augshift:g} (consistency: the same top-1 class for two independent uniform '
           'pixel placements of the source, the shifts AugShift trains for)',
      evidence=evidence)}


def augshift_over_steps(summary: dict[str, Any],
                        t: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """`judge_augshift` at every step where each cell it reads measured its metrics (the
  cells' ``metric_curves``; test accuracy from their ``curve``, nan where not evaluated):
  ``{'augshift': {'steps', 'holds', 'evidence'}}``; None without such curves."""
  standard = summary.get('standard') or []
  cells = summary['cells'] + standard
  if any(not c.get('metric_curves') or None in c['metric_curves'].values() for c in cells):
    return None
  steps = cells[0]['metric_curves']['consistency']['steps']
  if any(v['steps'] != steps for c in cells for v in c['metric_curves'].values()):
    return None

  def at(c, i, step):
    accuracy = dict(zip(c['curve']['steps'], c['curve']['mean'])) if 'curve' in c else {}
    return dict(c, mean=accuracy.get(step, math.nan), metrics={
        m: {'mean': v['mean'][i], 'std': v['std'][i]} for m, v in c['metric_curves'].items()})

  return _per_claim(steps, [
      judge_augshift({'cells': [at(c, i, s) for c in summary['cells']],
                      'standard': [at(c, i, s) for c in standard]}, t)
      for i, s in enumerate(steps)])


def judge_attack(results: dict[str, Any], t: ml_collections.ConfigDict) -> dict[str, Claim]:
  """overall_attack and region_attack from the segmentation study's table at N."""
  mean = {row: v['mean'] for row, v in results['table'].items()}
  clean = mean['clean']

  def drop(row, region):
    return clean[region] - mean[row][region]

  top, rand = drop('top-N overall', 'whole'), drop('random N', 'whole')
  n = results['table_count']
  overall = dict(
      holds=top >= t.min_drop and top >= t.overall_attack * max(rand, 0.0),
      rule=f'whole-image mIoU drop of top-N overall >= {t.min_drop:g} and >= '
           f'{t.overall_attack:g} x the drop of random N (N = {n})',
      evidence=dict(n=n, num_channels=results['num_channels'], clean=clean['whole'],
                    top_overall=mean['top-N overall']['whole'], random=mean['random N']['whole'],
                    top_drop=top, random_drop=rand))
  left = drop('top-N left', 'left') - drop('top-N left', 'right')
  right = drop('top-N right', 'right') - drop('top-N right', 'left')
  region = dict(
      holds=left >= t.min_drop and right >= t.min_drop,
      rule=f'top-N left lowers left-half mIoU more than right-half mIoU by >= {t.min_drop:g}, '
           'and top-N right the reverse',
      evidence=dict(n=n, left_attack_left_drop=drop('top-N left', 'left'),
                    left_attack_right_drop=drop('top-N left', 'right'),
                    right_attack_right_drop=drop('top-N right', 'right'),
                    right_attack_left_drop=drop('top-N right', 'left'),
                    left_margin=left, right_margin=right))
  return {'overall_attack': overall, 'region_attack': region}


def attack_over_steps(results: dict[str, Any],
                      t: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """`judge_attack` of the segmentation study's table at every step its seeds were attacked
  (``over_steps``): ``{'<claim>': {'steps', 'holds', 'evidence'}}``; None without."""
  over = results.get('over_steps')
  if not over or not over['steps']:
    return None
  return _per_claim(over['steps'], [
      judge_attack({'table': table, 'table_count': results['table_count'],
                    'num_channels': results['num_channels']}, t) for table in over['tables']])


def over_steps(experiments: dict[str, Any], t: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """Every claim that its study measured over training: ``{'<claim>': {'steps', 'holds',
  'evidence'}}`` (`location_over_steps`, `augshift_over_steps`, `attack_over_steps`); None
  when no study did. The verdicts stay those of the final step."""
  out = {}
  for judged in (location_over_steps(experiments['location'], t),
                 augshift_over_steps(experiments['augshift'], t),
                 attack_over_steps(experiments['segmentation'], t)):
    out.update(judged or {})
  return out or None
