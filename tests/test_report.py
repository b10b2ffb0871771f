"""REPORT.md: one headline sentence per claim from its evidence, the verdict table, each
study's table and command once, its figures; from a suite's results dict alone."""

import os

import pytest

from gpjax.studies import claims
from gpjax.studies import report

EVIDENCE = {
    'gap_location': {'accuracy': 0.9876, 'std': 0.0123, 'seeds': 3, 'chance': 1 / 9,
                     'threshold': 0.5},
    'permute_location': {'gapnet': 0.9, 'permutenet': 0.15, 'drop': 0.75, 'chance': 1 / 9},
    'permute_semantic': {'semantic_retention': 0.95, 'semantic_permutenet': 0.62,
                         'semantic_gapnet': 0.65, 'location_retention': 0.05,
                         'semantic_drop': 0.03, 'location_drop': 0.75},
    'augshift': {'weight': 0.5, 'consistency_gain': 0.1, 'against': 'lambda = 0',
                 'loss_gain': 0.1,
                 'baseline': {'consistency': 0.7, 'readout_accuracy': 0.9,
                              'latent_distance': 0.25, 'test_accuracy': 0.6},
                 'augshift': {'consistency': 0.8, 'readout_accuracy': 0.5,
                              'latent_distance': 0.125, 'test_accuracy': 0.58}},
    'overall_attack': {'n': 25, 'num_channels': 128, 'clean': 0.5, 'top_overall': 0.3,
                       'top_drop': 0.2, 'random': 0.45, 'random_drop': 0.05},
    'region_attack': {'n': 25, 'left_attack_left_drop': 0.2, 'left_attack_right_drop': 0.05,
                      'right_attack_right_drop': 0.1, 'right_attack_left_drop': 0.125},
}


def suite_results():
  """A suite's results.json as `gpjax.studies.reproduce` writes it, with made-up numbers."""
  location = {'cells': [
      {'task': t, 'head': h, 'padding': 'zero', 'grid': 3, 'mean': m, 'std': 0.01,
       'chance': c} for t, c, means in (('location', 1 / 9, (0.9, 0.15)),
                                         ('semantic', 0.1, (0.65, 0.62)))
      for h, m in zip(('gapnet', 'permutenet'), means)],
      'probes': [{'task': 'location', 'grid': 3, 'layer': layer, 'retained': r}
                 for layer, r in ((4, 0.2), (5, 0.1))]}
  augshift = {'cells': [{'sweep': w, 'metrics': {
      'consistency': {'mean': c, 'std': 0.02}, 'readout_accuracy': {'mean': r, 'std': 0.03}}}
      for w, c, r in ((0.5, 0.8, 0.5), (0.0, 0.7, 0.9))]}
  segmentation = {'num_channels': 128, 'curves': {
      'counts': [0, 10, 25], 'top_overall': {'whole': [0.5, 0.4, 0.3]},
      'random': {'whole': {'mean': [0.5, 0.48, 0.45], 'std': [0.0, 0.01, 0.02]}}}}
  return {
      'suite': 'micro', 'command': 'python -m gpjax.main --config=configs/reproduce.py:micro',
      'device': {'description': '1 cpu device'},
      'versions': {'jax': '0.10.2', 'flax': '0.12.8', 'python': '3.11.7'},
      'wall_seconds': 65.0, 'timing_seconds': {'location': 65.0, 'augshift': 42.0,
                                               'segmentation': 18.4},
      'study_processes': [['location'], ['augshift', 'segmentation']],
      'data': {'classification': 'gpjax_digits', 'segmentation': 'gpjax_street'},
      'claims': {k: {'holds': k != 'region_attack', 'evidence': e, 'rule': f'rule of {k}'}
                 for k, e in EVIDENCE.items()},
      'claim_curves': None,
      'study_commands': {s: f'python -m gpjax.main --config=configs/{s}.py'
                         for s in ('location', 'augshift', 'segmentation')},
      'experiments': {'location': location, 'augshift': augshift, 'segmentation': segmentation},
      'config': {'claims': {'grid': 3}}}


def test_headlines_state_the_evidence():
  h = {k: report.headline(k, e) for k, e in EVIDENCE.items()}
  assert h['gap_location'] == ('GAPNet, zero padding: 98.8% ± 1.2% location accuracy over 3 '
                               'seeds (chance 11.1%, threshold 50.0%).')
  assert h['permute_location'] == ('Location accuracy GAPNet 90.0% vs PermuteNet 15.0%: a drop '
                                   'of 75.0 points (chance 11.1%).')
  assert h['permute_semantic'].startswith('PermuteNet keeps 95.0% of the above-chance semantic '
                                          'accuracy (62.0% vs GAPNet 65.0%)')
  assert h['augshift'] == ('lambda = 0.5 vs lambda = 0: consistency 80.0% vs 70.0% (gain +10.0 '
                           'points), location readout 50.0% vs 90.0%, latent distance 0.125 vs '
                           '0.250, test accuracy 58.0% vs 60.0%.')
  standard = dict(EVIDENCE['augshift'], against='standard training', consistency_gain=0.05,
                  standard={'consistency': 0.75, 'readout_accuracy': 0.95,
                            'latent_distance': 0.3, 'test_accuracy': 0.61})
  assert report.headline('augshift', standard) == (
      'lambda = 0.5 vs standard training: consistency 80.0% vs 75.0% (gain +5.0 points), '
      'location readout 50.0% vs 95.0%, latent distance 0.125 vs 0.300, test accuracy 58.0% vs '
      "61.0%; lambda = 0 (the loss's own share): consistency 70.0%, gain +10.0 points.")
  assert h['overall_attack'] == ('N = 25 of 128 channels: whole-image mIoU 0.500 clean, 0.300 '
                                 'top-N overall (drop 0.200), 0.450 random N (drop 0.050).')
  assert h['region_attack'] == ('N = 25: top-N left drops left/right mIoU by 0.200/0.050; '
                                'top-N right drops right/left by 0.100/0.125.')
  missing = dict(EVIDENCE['gap_location'], std=None)
  assert '98.8% ± n/a location accuracy' in report.headline('gap_location', missing)


def test_report_holds_every_claim_each_table_once_and_the_figures(tmp_path):
  results = suite_results()
  for study in ('location', 'augshift', 'segmentation'):
    os.makedirs(tmp_path / study)
    (tmp_path / study / 'table.md').write_text(f'| {study} table |\n')
  figures = ('location/accuracy.png', 'augshift/metrics.png', 'augshift/accuracy_vs_shift.png',
             'segmentation/curves.png')
  for figure in figures:  # The studies' own figures: linked where a study wrote them.
    (tmp_path / figure).write_bytes(b'\x89PNG')
  path = report.write_report(str(tmp_path), results)
  assert path == str(tmp_path / 'REPORT.md')
  text = (tmp_path / 'REPORT.md').read_text()
  assert text.startswith('# Reproduction report: the `micro` suite\n')
  assert ('Wall time 1 min 5 s (location 1 min 5 s, augshift 42 s, segmentation 18 s; 2 '
          'processes at once: location | augshift then segmentation, each then helping with the '
          "others' cells), each study timed" in text)
  for i, (key, statement) in enumerate(claims.STATEMENTS.items(), 1):
    verdict = 'does not hold' if key == 'region_attack' else 'holds'
    assert f'| `{key}`: {statement} | **{verdict}** | {report.headline(key, EVIDENCE[key])} |' \
        in text
    assert f'## {i}. {statement} (`{key}`)' in text and f'Rule: rule of {key}.' in text
  for study in ('location', 'augshift', 'segmentation'):
    assert text.count(f'| {study} table |') == 1
    assert text.count(f'python -m gpjax.main --config=configs/{study}.py\n') == 1
  assert text.count('The table is under claim 1 above.') == 2  # permute_location, _semantic.
  assert text.count('The table is under claim 5 above.') == 1  # region_attack.
  for figure in ('summary.png',) + figures:
    assert f']({figure})' in text, figure
  assert 'layer_protocol.png' not in text and 'claim_curves.png' not in text  # Not written.
  with open(tmp_path / 'summary.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('seconds, text', [(42.4, '42 s'), (59.6, '1 min 0 s'),
                                           (3725, '62 min 5 s')])
def test_durations_in_minutes_and_seconds(seconds, text):
  assert report._duration(seconds) == text


def test_curves_are_described_and_drawn(tmp_path):
  """With curves every claim gets a sentence of its values per step, its trend and how often
  the rule held, and claim_curves.png is drawn."""
  results = suite_results()
  steps = [10, 100]
  def judged(**series):
    return [dict(zip(series, values)) for values in zip(*series.values())]
  consistency = lambda *c: [{'consistency': v, 'consistency_std': 0.01} for v in c]
  results['claim_curves'] = {
      'gap_location': {'steps': steps, 'holds': [False, True], 'evidence': judged(
          accuracy=[0.3, 0.9], std=[0.01, 0.0], threshold=[0.5, 0.5])},
      'permute_location': {'steps': steps, 'holds': [False, True], 'evidence': judged(
          gapnet=[0.3, 0.9], permutenet=[0.2, 0.15], gapnet_std=[0.0, 0.0],
          permutenet_std=[0.0, 0.0], drop=[0.1, 0.75])},
      'permute_semantic': {'steps': steps, 'holds': [False, False], 'evidence': judged(
          semantic_retention=[None, 0.5], location_retention=[None, 0.05])},
      'augshift': {'steps': [50, 100, 200], 'holds': [False, True, True], 'evidence': judged(
          weight=[1.0] * 3, against=['standard training'] * 3,
          consistency_gain=[-0.02, 0.05, 0.04], augshift=consistency(0.6, 0.8, 0.84),
          standard=consistency(0.62, 0.75, 0.8), baseline=consistency(0.6, 0.7, 0.9))},
      'overall_attack': {'steps': [100, 200], 'holds': [False, False], 'evidence': judged(
          top_drop=[0.01, 0.02], random_drop=[0.02, 0.015])},
      'region_attack': {'steps': [100, 200], 'holds': [False, False], 'evidence': judged(
          left_margin=[0.0, 0.02], right_margin=[-0.01, 0.005])}}
  results['config']['claims'].update(permute_location=0.2, permute_semantic=0.1, augshift=0.01,
                                     min_drop=0.01, overall_attack=2.0)
  for study in ('location', 'augshift', 'segmentation'):
    os.makedirs(tmp_path / study)
    (tmp_path / study / 'table.md').write_text(f'| {study} table |\n')
  report.write_report(str(tmp_path), results)
  text = (tmp_path / 'REPORT.md').read_text()
  assert ('Over training steps (10: 0.300, 100: 0.900) the GAPNet location accuracy is growing; '
          'the rule holds at 1 of 2 evaluated steps.') in text
  assert 'Over training steps (10: 0.100, 100: 0.750) the GAPNet minus PermuteNet' in text
  assert ('Over training steps (10: n/a, 100: 0.450) the semantic minus location share kept is '
          'not measurable; the rule holds at 0 of 2 evaluated steps.') in text
  assert ('Over training steps (50: -0.020, 100: 0.050, 200: 0.040) the consistency gain over '
          'the baseline is rising, then falling (highest 0.050 at step 100); the rule holds at '
          '2 of 3 evaluated steps.') in text
  assert ('Over training steps (100: -0.010, 200: 0.005) the whole-image mIoU drop of top-N '
          'overall minus that of random N is growing') in text
  assert ('Over training steps (100: -0.010, 200: 0.005) the smaller of the two region '
          'margins') in text
  assert (tmp_path / 'claim_curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert '](claim_curves.png)' in text


def test_a_curve_that_turns_names_its_turning_point():
  curves = {'permute_location': {
      'steps': [25, 50, 800], 'holds': [False, True, True],
      'evidence': [{'drop': 0.02}, {'drop': 0.858}, {'drop': 0.715}]}}
  assert report.curve_text('permute_location', curves) == (
      'Over training steps (25: 0.020, 50: 0.858, 800: 0.715) the GAPNet minus PermuteNet '
      'location accuracy is rising, then falling (highest 0.858 at step 50); the rule holds at '
      '2 of 3 evaluated steps.')
