"""The AugShift study (job ``augshift_study``, configs/augshift_study.py): the grid of
`gpjax.studies.grid` with a sweep over ``study.sweep_field`` (``augshift.weight``), and the
invariance measures of `gpjax.probes.invariance` as the evaluator of every run (cached in
``runs/<name>/invariance``; at each checkpoint that ``train.keep_at`` keeps too, in
``invariance_step<S>``, for each cell's ``metric_curves``). Writes results.json, table.md,
accuracy.png, metrics.png and accuracy_vs_shift.png.
"""

import copy
import functools
import os
from typing import Any

import ml_collections

from gpjax.job import Job
from gpjax.probes import invariance, runner
from gpjax.studies import figures as study_figures
from gpjax.studies import grid as study
from gpjax.tasks import classification

# Per-run scalars the study summarises over seeds (from each run's invariance results).
METRICS = ('consistency', 'readout_accuracy', 'latent_distance', 'shifted_accuracy')


def sweep(config: ml_collections.ConfigDict) -> study.Sweep:
  """The study's extra grid axis: (study.sweep_field, its values)."""
  return study.parse_sweep(config.base, config.study.sweep_field, config.study.sweep_values)


def runs(config: ml_collections.ConfigDict) -> study.Runs:
  """The grid (task x head x padding x grid x lambda x seed), then `standard_runs`."""
  return study.run_configs(config, sweep(config)) + standard_runs(config)


def standard_runs(config: ml_collections.ConfigDict) -> study.Runs:
  """Standard training for each cell and seed (``augshift.copies = 1``, lambda 0), named
  ``<task>_<head>_<padding>_g<g>_standard_s<seed>``; none without ``study.standard_baseline``."""
  if not config.study.standard_baseline:
    return []
  out = []
  for name, run in study.run_configs(config):
    run.augshift.copies, run.augshift.weight = 1, 0.0
    head, _, seed = name.rpartition('_s')
    out.append((f'{head}_standard_s{seed}', run))
  return out


def check(config: ml_collections.ConfigDict) -> None:
  """The grid with its sweep, and the evaluator's fields (its source is set per run)."""
  study.validate_runs(config, runs(config))
  invariance.check_fields(config.evaluator.invariance, 'evaluator.invariance')


def measure(config: ml_collections.ConfigDict, name: str, run: ml_collections.ConfigDict,
            run_dir: str) -> dict[str, Any]:
  """Evaluator: the invariance results of one trained run's newest checkpoint
  (``run_dir/invariance``) with ``curve``: its `METRICS` at each checkpoint kept by
  ``train.keep_at`` (``run_dir/invariance_step<S>``) and at the newest, in step order."""

  def compute(step, out):
    probe = copy.deepcopy(config.evaluator)
    probe.invariance.source_workdir = run_dir
    probe.invariance.source_step = step
    print(f'invariance of {name}' + (f' at step {step}' if step else ''), flush=True)
    return runner.run_probe(invariance.PROBE, probe, out)

  measured = study.at_kept_steps(run, run_dir, os.path.join(run_dir, 'invariance'), compute)
  return dict(measured[-1][1], curve=[dict(step=s, **{m: r[m] for m in METRICS})
                                      for s, r in measured])


def run_study(config: ml_collections.ConfigDict, workdir: str,
              progress: study.Progress | None = None, share: str = 'alone') -> dict[str, Any]:
  """Trains and measures every run not finished yet; writes the study's files (with
  ``share`` 'help', `study.run_grid`'s, only does the cells no other process holds and
  returns {})."""
  check(config)
  grid, standard, (field, _) = study.run_configs(config, sweep(config)), standard_runs(config), \
      sweep(config)
  outcome = study.run_grid(grid + standard, workdir, classification.train_and_evaluate,
                           {'invariance': functools.partial(measure, config)}, progress,
                           study.cell_trainer(config, classification.TASK), share)
  if outcome.preempted is not None or share == 'help':
    return outcome.preempted or {}
  measured = outcome.evaluations['invariance']
  metrics = {name: {m: float(r[m]) for m in METRICS} for name, r in measured.items()}
  over = {name: r['curve'] for name, r in measured.items()}
  summary = study.summarize(grid, outcome.results, sweep(config), metrics, over)
  table = study.markdown_table(summary) + '\n' + study.metric_table(summary)
  if standard:
    summary['standard'] = study.summarize(standard, outcome.results, metrics=metrics,
                                          metric_curves=over)['cells']
    table += ('\nStandard training (one canvas per image, placed as copy 1, cross-entropy '
              'only):\n\n' + study.metric_table({'cells': summary['standard']}))
  curves = {}  # (head, padding, lambda or 'standard') -> each seed's accuracy vs shift.
  for name, run in grid + standard:
    value = 'standard' if run.augshift.copies == 1 else study.config_field(run, field)
    curves.setdefault((run.model.head, run.model.padding, value), []).append(
        measured[name]['accuracy_vs_shift'])
  study.write_outputs(workdir, summary, table, {
      'accuracy.png': functools.partial(study_figures.save_accuracy_figure, summary=summary),
      'metrics.png': functools.partial(study_figures.save_metric_figure, summary=summary),
      'accuracy_vs_shift.png': functools.partial(study_figures.save_shift_curves,
                                                 curves=curves, field=field)})
  return summary


JOBS = {'augshift_study': Job(run_study, check, "AugShift's lambdas against its lambda-0 "
                                                'ablation and standard training')}
