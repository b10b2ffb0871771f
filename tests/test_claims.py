"""Verdicts of gpjax/claims.py on hand-made study summaries: each flips at its threshold."""

import math

import pytest

from configs import reproduce
from gpjax.studies import claims


def _thresholds():
  return reproduce.get_config('micro').claims


def _cell(task, head, mean, padding='zero', std=0.0, grid=3, chance=None):
  chance = chance if chance is not None else (1 / grid ** 2 if task == 'location' else 0.1)
  return dict(task=task, head=head, padding=padding, grid=grid, mean=mean, std=std,
              accuracies=[mean - std, mean + std], chance=chance)


def _location(gap_loc, perm_loc, gap_sem, perm_sem, circular=0.12):
  return {'cells': [_cell('location', 'gapnet', gap_loc), _cell('location', 'permutenet', perm_loc),
                    _cell('semantic', 'gapnet', gap_sem), _cell('semantic', 'permutenet', perm_sem),
                    _cell('location', 'gapnet', circular, padding='circular')],
          'probes': [dict(task='location', grid=3, layer=5, retained=0.1)]}


def test_location_claims_on_the_papers_numbers():
  """GAPNet 100% location; PermuteNet 78% location, 80% vs 90% semantic (the public summary)."""
  out = claims.judge_location(_location(1.0, 0.78, 0.90, 0.80), _thresholds())
  assert out['gap_location']['holds'] and out['permute_location']['holds']
  assert out['permute_semantic']['holds']
  e = out['permute_semantic']['evidence']
  assert e['location_retention'] == pytest.approx((0.78 - 1 / 9) / (1 - 1 / 9))
  assert e['semantic_retention'] == pytest.approx(0.7 / 0.8)
  assert e['probe_location_layer5_retained'] == 0.1
  assert out['gap_location']['evidence']['gapnet_location_by_padding'] == {
      'zero': 1.0, 'circular': 0.12}


@pytest.mark.parametrize('gap, holds', [(0.55, False), (0.56, True)])
def test_gap_location_threshold(gap, holds):
  """Threshold: chance + 0.5 (1 - chance) = 5/9 = 0.5556 at g = 3."""
  out = claims.judge_location(_location(gap, 0.1, 0.9, 0.8), _thresholds())
  assert out['gap_location']['holds'] is holds
  assert out['gap_location']['evidence']['threshold'] == pytest.approx(5 / 9)


@pytest.mark.parametrize('perm, holds', [(0.81, False), (0.79, True)])
def test_permute_location_threshold(perm, holds):
  assert claims.judge_location(_location(1.0, perm, 0.9, 0.8),
                               _thresholds())['permute_location']['holds'] is holds


def test_permute_semantic_fails_when_both_tasks_lose_alike():
  """The CPU study's numbers: both tasks keep ~13% of their above-chance accuracy."""
  out = claims.judge_location(_location(1.0, 0.232, 0.917, 0.222), _thresholds())
  assert not out['permute_semantic']['holds']
  assert out['permute_location']['holds']


def test_permute_semantic_undefined_near_chance():
  """A GAPNet within 10 points of chance on the semantic task leaves the share undefined."""
  out = claims.judge_location(_location(1.0, 0.2, 0.15, 0.3), _thresholds())
  assert math.isnan(out['permute_semantic']['evidence']['semantic_retention'])
  assert not out['permute_semantic']['holds']


def test_missing_cell_is_named():
  summary = _location(1.0, 0.2, 0.9, 0.8)
  summary['cells'] = summary['cells'][1:]
  with pytest.raises(KeyError, match='task=location head=gapnet padding=zero grid=3'):
    claims.judge_location(summary, _thresholds())


def _augshift(base, aug):
  def cell(weight, consistency):
    metrics = {m: {'mean': 0.5, 'std': 0.0} for m in ('readout_accuracy', 'latent_distance',
                                                       'shifted_accuracy')}
    metrics['consistency'] = {'mean': consistency, 'std': 0.01}
    return dict(sweep=weight, mean=0.7, metrics=metrics)
  return {'cells': [cell(0.0, base), cell(1.0, aug), cell(10.0, 0.99)]}


@pytest.mark.parametrize('aug, holds', [(0.805, False), (0.815, True)])
def test_augshift_reads_the_configured_lambda(aug, holds):
  """Judged at claims.augshift_weight = 1 (lambda 10's 0.99 is ignored); gain >= 0.01."""
  out = claims.judge_augshift(_augshift(0.80, aug), _thresholds())['augshift']
  assert out['holds'] is holds
  assert out['evidence']['consistency_gain'] == pytest.approx(aug - 0.80)
  assert out['evidence']['augshift']['consistency'] == aug


def test_augshift_is_judged_against_standard_training():
  """With standard runs the gain is over them; the gain over lambda 0 (the loss's own share)
  is reported beside it and does not decide."""
  def standard(consistency):
    cell = _augshift(0.0, 0.0)['cells'][0]
    cell['metrics']['consistency']['mean'] = consistency
    del cell['sweep']
    return cell

  for std, holds in ((0.80, True), (0.81, False)):
    summary = _augshift(0.70, 0.815)
    summary['standard'] = [standard(std)]
    out = claims.judge_augshift(summary, _thresholds())['augshift']
    assert out['holds'] is holds
    assert out['evidence']['against'] == 'standard training'
    assert out['evidence']['consistency_gain'] == pytest.approx(0.815 - std)
    assert out['evidence']['loss_gain'] == pytest.approx(0.815 - 0.70)
    assert out['evidence']['standard']['consistency'] == std
    assert 'standard training' in out['rule']


def _segmentation(clean, top, rand, left, right):
  row = lambda whole, l, r: {'mean': {'whole': whole, 'left': l, 'center': whole, 'right': r}}
  return {'table_count': 25, 'num_channels': 256,
          'table': {'clean': row(clean, clean, clean), 'top-N overall': row(top, top, top),
                    'random N': row(rand, rand, rand), 'top-N left': row(clean, *left),
                    'top-N right': row(clean, *right)}}


def test_attack_claims():
  t = _thresholds()
  holds = claims.judge_attack(_segmentation(0.5, 0.4, 0.48, (0.4, 0.49), (0.48, 0.42)), t)
  assert holds['overall_attack']['holds'] and holds['region_attack']['holds']
  assert holds['overall_attack']['evidence']['top_drop'] == pytest.approx(0.1)
  assert holds['region_attack']['evidence']['left_margin'] == pytest.approx(0.09)
  # Top-N only 1.5x the random drop; the right attack hurts the left half more.
  fails = claims.judge_attack(_segmentation(0.5, 0.47, 0.48, (0.4, 0.49), (0.45, 0.48)), t)
  assert not fails['overall_attack']['holds'] and not fails['region_attack']['holds']


def _with_curves(summary, curves):
  """Gives each cell of ``summary`` a curve over steps 10, 100 (two seeds alike)."""
  for c in summary['cells']:
    values = curves[(c['task'], c['head'], c['padding'])]
    c['curve'] = {'steps': [10, 100], 'values': [values, values], 'mean': values,
                  'std': [0.0, 0.0]}
  return summary


def test_location_claims_over_steps_judge_each_evaluation():
  """Each step is judged by the same rules as the final numbers: here GAPNet learns location
  by step 100, PermuteNet stays low, and the semantic share overtakes the location one."""
  summary = _with_curves(_location(1.0, 0.2, 0.9, 0.7), {
      ('location', 'gapnet', 'zero'): [0.3, 1.0], ('location', 'permutenet', 'zero'): [0.2, 0.2],
      ('semantic', 'gapnet', 'zero'): [0.5, 0.9], ('semantic', 'permutenet', 'zero'): [0.3, 0.7],
      ('location', 'gapnet', 'circular'): [0.1, 0.12]})
  out = claims.location_over_steps(summary, _thresholds())
  assert all(out[key]['steps'] == [10, 100] for key in out)
  assert out['gap_location']['holds'] == [False, True]
  assert out['permute_location']['holds'] == [False, True]
  assert [e['drop'] for e in out['permute_location']['evidence']] == pytest.approx([0.1, 0.8])
  # Step 10: GAPNet location 0.3 is more than 10 points above chance, so shares exist.
  e = out['permute_semantic']['evidence']
  assert e[0]['semantic_retention'] == pytest.approx(0.2 / 0.4)
  assert e[1]['location_retention'] == pytest.approx((0.2 - 1 / 9) / (1 - 1 / 9))
  # The last step equals the final verdicts, which read the same numbers.
  final = claims.judge_location(summary, _thresholds())
  for key in final:
    assert out[key]['holds'][-1] == final[key]['holds'], key
  assert claims.trend([e['accuracy'] for e in out['gap_location']['evidence']]) == 'growing'


def test_location_over_steps_needs_every_cell_curve():
  summary = _location(1.0, 0.2, 0.9, 0.7)
  assert claims.location_over_steps(summary, _thresholds()) is None


def _metric_curves(consistency, accuracy=(0.5, 0.7)):
  """A cell's ``metric_curves`` over steps 10, 100 (every metric but consistency 0.5) and
  its test-accuracy ``curve`` at the same steps."""
  curves = {m: {'steps': [10, 100], 'mean': [0.5, 0.5], 'std': [0.0, 0.0]}
            for m in ('readout_accuracy', 'latent_distance', 'shifted_accuracy')}
  curves['consistency'] = {'steps': [10, 100], 'mean': list(consistency), 'std': [0.02, 0.01]}
  return {'metric_curves': curves,
          'curve': {'steps': [10, 100], 'mean': list(accuracy), 'std': [0.0, 0.0]}}


def test_augshift_over_steps_judges_each_measured_checkpoint():
  """At step 10 AugShift is not yet more consistent than standard training, at 100 it is;
  the last step gives the final verdict, which reads the same numbers."""
  summary = _augshift(0.80, 0.90)
  standard = dict(_augshift(0.85, 0.0)['cells'][0], **_metric_curves((0.6, 0.85)))
  del standard['sweep']
  summary['standard'] = [standard]
  for c, consistency in zip(summary['cells'], ((0.6, 0.80), (0.6, 0.90), (0.7, 0.99))):
    c.update(_metric_curves(consistency))
  out = claims.augshift_over_steps(summary, _thresholds())['augshift']
  assert out['steps'] == [10, 100]
  assert out['holds'] == [False, True]
  assert [e['consistency_gain'] for e in out['evidence']] == pytest.approx([0.0, 0.05])
  assert [e['loss_gain'] for e in out['evidence']] == pytest.approx([0.0, 0.10])
  assert out['evidence'][0]['augshift']['test_accuracy'] == 0.5
  assert out['evidence'][0]['standard']['consistency_std'] == 0.02
  assert out['holds'][-1] == claims.judge_augshift(summary, _thresholds())['augshift']['holds']
  del summary['cells'][2]['metric_curves']
  assert claims.augshift_over_steps(summary, _thresholds()) is None


def test_attack_over_steps_judges_each_table():
  """The segmentation study's per-step tables are judged as the final table is."""
  early = _segmentation(0.5, 0.47, 0.48, (0.4, 0.49), (0.45, 0.48))
  late = _segmentation(0.5, 0.4, 0.48, (0.4, 0.49), (0.48, 0.42))
  results = dict(late, over_steps={'steps': [100, 200], 'tables': [early['table'],
                                                                  late['table']]})
  out = claims.attack_over_steps(results, _thresholds())
  assert out['overall_attack']['steps'] == [100, 200]
  assert out['overall_attack']['holds'] == [False, True]
  assert out['region_attack']['holds'] == [False, True]
  assert [e['top_drop'] for e in out['overall_attack']['evidence']] == pytest.approx([0.03, 0.1])
  assert claims.attack_over_steps(late, _thresholds()) is None


@pytest.mark.parametrize('values, word', [
    ([0.1, 0.5], 'growing'), ([0.5, 0.1], 'falling'), ([0.5, 0.505], 'flat'),
    ([None, 0.5], 'not measurable'), ([0.02, 0.86, 0.8, 0.72], 'rising, then falling'),
    ([0.5, 0.2, 0.6], 'falling, then rising'), ([0.1, 0.5, 0.505], 'growing')])
def test_trend(values, word):
  assert claims.trend(values) == word


def test_plain_image_numbers_beside_the_semantic_rule():
  """Grid-1 semantic cells give the plain image's share; they do not enter the rule."""
  summary = _location(1.0, 0.2, 0.9, 0.3)
  before = claims.judge_location(summary, _thresholds())['permute_semantic']
  summary['cells'] += [_cell('semantic', 'gapnet', 0.95, grid=1, chance=0.1),
                       _cell('semantic', 'permutenet', 0.6, grid=1, chance=0.1)]
  after = claims.judge_location(summary, _thresholds())['permute_semantic']
  assert after['holds'] == before['holds']
  e = after['evidence']
  assert e['plain_permutenet'] == 0.6 and e['plain_gapnet'] == 0.95
  assert e['plain_retention'] == pytest.approx(0.5 / 0.85)
