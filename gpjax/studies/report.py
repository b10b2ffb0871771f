"""REPORT.md and summary.png of a reproduction suite (``gpjax.studies.reproduce``).

The report reads only the suite's ``results.json`` dict and the studies' own
``table.md`` files and figures, so every number in it is one that a command wrote.
"""

import os
from typing import Any

from gpjax.studies import claims as claims_lib
from gpjax.studies import figures as study_figures

# Claim -> (study whose table and figures back it, its figures where the study wrote them).
SECTIONS = {
    'gap_location': ('location', ('accuracy.png',)),
    'permute_location': ('location', ()),
    'permute_semantic': ('location', ('layer_protocol.png',)),
    'augshift': ('augshift', ('metrics.png', 'accuracy_vs_shift.png')),
    'overall_attack': ('segmentation', ('curves.png',)),
    'region_attack': ('segmentation', ()),
}


def _pct(x: float | None) -> str:
  return 'n/a' if x is None else f'{100 * x:.1f}%'


def headline(key: str, e: dict[str, Any]) -> str:
  """The numbers behind one verdict, in one sentence."""
  if key == 'gap_location':
    return (f'GAPNet, zero padding: {_pct(e["accuracy"])} ± {_pct(e["std"])} location accuracy '
            f'over {e["seeds"]} seeds (chance {_pct(e["chance"])}, threshold '
            f'{_pct(e["threshold"])}).')
  if key == 'permute_location':
    return (f'Location accuracy GAPNet {_pct(e["gapnet"])} vs PermuteNet {_pct(e["permutenet"])}'
            f': a drop of {100 * e["drop"]:.1f} points (chance {_pct(e["chance"])}).')
  if key == 'permute_semantic':
    return (f'PermuteNet keeps {_pct(e["semantic_retention"])} of the above-chance semantic '
            f'accuracy ({_pct(e["semantic_permutenet"])} vs GAPNet {_pct(e["semantic_gapnet"])}) '
            f'and {_pct(e["location_retention"])} of the location accuracy; drops '
            f'{100 * e["semantic_drop"]:.1f} vs {100 * e["location_drop"]:.1f} points.' + (
                f' On the plain image (g=1): PermuteNet {_pct(e["plain_permutenet"])} vs GAPNet '
                f'{_pct(e["plain_gapnet"])}, a share of {_pct(e["plain_retention"])} kept.'
                if 'plain_retention' in e else ''))
  if key == 'augshift':
    b, a = e.get('standard', e['baseline']), e['augshift']
    zero = (f'; lambda = 0 (the loss\'s own share): consistency '
            f'{_pct(e["baseline"]["consistency"])}, gain {100 * e["loss_gain"]:+.1f} points'
            if 'standard' in e else '')
    return (f'lambda = {e["weight"]:g} vs {e["against"]}: consistency {_pct(a["consistency"])} '
            f'vs {_pct(b["consistency"])} (gain {100 * e["consistency_gain"]:+.1f} points), '
            f'location readout {_pct(a["readout_accuracy"])} vs {_pct(b["readout_accuracy"])}, '
            f'latent distance {a["latent_distance"]:.3f} vs {b["latent_distance"]:.3f}, test '
            f'accuracy {_pct(a["test_accuracy"])} vs {_pct(b["test_accuracy"])}{zero}.')
  if key == 'overall_attack':
    return (f'N = {e["n"]} of {e["num_channels"]} channels: whole-image mIoU {e["clean"]:.3f} '
            f'clean, {e["top_overall"]:.3f} top-N overall (drop {e["top_drop"]:.3f}), '
            f'{e["random"]:.3f} random N (drop {e["random_drop"]:.3f}).')
  return (f'N = {e["n"]}: top-N left drops left/right mIoU by {e["left_attack_left_drop"]:.3f}/'
          f'{e["left_attack_right_drop"]:.3f}; top-N right drops right/left by '
          f'{e["right_attack_right_drop"]:.3f}/{e["right_attack_left_drop"]:.3f}.')


def _difference(a: float | None, b: float | None) -> float | None:
  return None if a is None or b is None else a - b


# Claim -> (its quantity over steps, from one step's evidence (`claims.over_steps`), in words).
CURVE_QUANTITIES = {
    'gap_location': (lambda e: e['accuracy'], 'GAPNet location accuracy'),
    'permute_location': (lambda e: e['drop'], 'GAPNet minus PermuteNet location accuracy'),
    'permute_semantic': (lambda e: _difference(e['semantic_retention'],
                                               e['location_retention']),
                         'semantic minus location share kept'),
    'augshift': (lambda e: e['consistency_gain'], 'consistency gain over the baseline'),
    'overall_attack': (lambda e: e['top_drop'] - e['random_drop'],
                       'whole-image mIoU drop of top-N overall minus that of random N'),
    'region_attack': (lambda e: min(e['left_margin'], e['right_margin']),
                      'smaller of the two region margins (own-half minus other-half drop)'),
}


def curve_text(key: str, curves: dict[str, Any] | None) -> str | None:
  """What the claim's quantity did over the evaluated steps, in one sentence; None for a
  claim judged at the final step only."""
  if curves is None or key not in curves:
    return None
  quantity, words = CURVE_QUANTITIES[key]
  steps = curves[key]['steps']
  values = [quantity(e) for e in curves[key]['evidence']]
  shown = ', '.join(f'{s}: {"n/a" if v is None else f"{v:.3f}"}' for s, v in zip(steps, values))
  holds, shape = sum(curves[key]['holds']), claims_lib.trend(values)
  if shape.startswith(('rising', 'falling,')):  # Name the turning point.
    measured = [(v, s) for s, v in zip(steps, values) if v is not None]
    v, s = (max if shape.startswith('rising') else min)(measured)
    shape += f' ({"highest" if shape.startswith("rising") else "lowest"} {v:.3f} at step {s})'
  return (f'Over training steps ({shown}) the {words} is {shape}; the rule '
          f'holds at {holds} of {len(values)} evaluated steps.')


def write_report(workdir: str, results: dict[str, Any]) -> str:
  """Writes workdir/REPORT.md (and summary.png) from a suite's results; returns the path."""
  study_figures.save_summary_figure(os.path.join(workdir, 'summary.png'), results)
  curves = results['claim_curves']
  if curves is not None:
    study_figures.save_claim_curves(os.path.join(workdir, 'claim_curves.png'), curves,
                                    results['config']['claims'])
  claims, timing = results['claims'], results['timing_seconds']
  v, processes = results['versions'], results['study_processes']
  at_once = (f'; {len(processes)} processes at once: ' + ' | '.join(
      ' then '.join(g) for g in processes) + ", each then helping with the others' cells"
      ) if len(processes) > 1 else ''
  lines = [
      f'# Reproduction report: the `{results["suite"]}` suite', '',
      f'Made by `{results["command"]}` on {results["device"]["description"]}, JAX '
      f'{v["jax"]}, Flax {v["flax"]}, Python {v["python"]}. Wall time '
      f'{_duration(results["wall_seconds"])} (' + ', '.join(
          f'{k} {_duration(s)}' for k, s in timing.items()) + f'{at_once}), each study timed '
      'in the run that finished it.', '',
      f'Data: {results["data"]["classification"]} (location and semantic tasks, AugShift), '
      f'{results["data"]["segmentation"]} (segmentation). Every number below was computed by '
      'this command; the verdicts apply the rules stated under each claim to them '
      '(thresholds: `config.claims` in configs/reproduce.py).', '',
      '![summary](summary.png)', '',
      '| claim | verdict | numbers |', '|---|---|---|']
  after = ['', 'The claims over training steps (the same runs: their evaluations, and the '
           'probes of the checkpoints that `train.keep_at` keeps; verdicts are judged at the '
           'final step):', '', '![claim curves](claim_curves.png)'] if curves is not None else []
  for key, claim in claims.items():
    lines.append(f'| `{key}`: {claims_lib.STATEMENTS[key]} | **{claims_lib.verdict(claim)}** | '
                 f'{headline(key, claim["evidence"])} |')
  lines += after
  shown = set()
  for i, (key, claim) in enumerate(claims.items(), 1):
    study, figures = SECTIONS[key]
    lines += ['', f'## {i}. {claims_lib.STATEMENTS[key]} (`{key}`)', '',
              f'**Verdict: {claims_lib.verdict(claim)}.** {headline(key, claim["evidence"])}', '',
              f'Rule: {claim["rule"]}.']
    text = curve_text(key, curves)
    if text:
      lines += ['', text]
    if study not in shown:
      shown.add(study)
      with open(os.path.join(workdir, study, 'table.md')) as f:
        table = f.read().strip()
      lines += ['', table, '', 'Command (the suite runs exactly this study in '
                f'`{study}/`; rerunning it there skips the finished runs):', '', '```',
                results['study_commands'][study], '```']
    else:
      lines += ['', f'The table is under claim {_first(claims, study)} above.']
    lines += [''] + [f'![{study} {name}]({study}/{name})' for name in figures
                     if os.path.exists(os.path.join(workdir, study, name))]
  path = os.path.join(workdir, 'REPORT.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines).rstrip() + '\n')
  return path


def _first(claims: dict[str, Any], study: str) -> int:
  return 1 + next(i for i, k in enumerate(claims) if SECTIONS[k][0] == study)


def _duration(seconds: float) -> str:
  m, s = divmod(int(round(seconds)), 60)
  return f'{m} min {s} s' if m else f'{s} s'
