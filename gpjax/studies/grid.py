"""The study runner: a grid of training runs, evaluators on each run, summaries over seeds.

A grid is a list of ``(name, training config)``, cell-major and seed-minor (`grid`);
`run_configs` builds the classification grid task x head x padding x grid (x sweep) x
seed from ``config.study``. `run_grid` trains each run in ``workdir/runs/<name>``: a run
whose ``results.json`` exists is not rerun and an interrupted one resumes from its
checkpoint, so a killed study continues where it stopped when its command is rerun. Then
every evaluator ``(name, run_config, run_dir) -> dict`` is called on the run; evaluators
cache their own outputs (`cached_or`). Processes of one host can work through a grid
together (``share``): each cell is done by the process that holds its lock (`cell_lock`).
`summarize` gives mean ± std over seeds per cell.
Each study (`gpjax.studies.location`, `augshift`, `segmentation`) is a grid and its
evaluators on this runner.
"""

import contextlib
import copy
import dataclasses
import fcntl
import functools
import itertools
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from gpjax import checks
from gpjax.core import checkpoint, multirun, trainer, writers
from gpjax.core.task import Task
from gpjax.errors import ConfigError
from gpjax.studies import figures as study_figures
from gpjax.tasks import classification

AXES = ('task', 'head', 'padding', 'grid')
Runs = list[tuple[str, ml_collections.ConfigDict]]  # (run name, its training config).
Sweep = tuple[str, Sequence[Any]]  # (dotted training-config field, its values): one more axis.
Train = Callable[[ml_collections.ConfigDict, str], dict[str, Any]]  # (config, run_dir) -> results.
TrainCell = Callable[[list[ml_collections.ConfigDict], list[str]], list[dict[str, Any]]]  # Many.
Evaluator = Callable[[str, ml_collections.ConfigDict, str], dict[str, Any]]  # (name, config, dir).
Progress = Callable[[str, int, int], None]  # (run name, its index, number of runs).
SHARE = ('alone', 'lead', 'help')  # `run_grid`'s ways to share a grid with other processes.


def parse_sweep(base: ml_collections.ConfigDict, field: str, values: Any,
                name: str = 'study.sweep_values') -> Sweep:
  """``(field, values)``: ``values`` (a tuple) checked against the type of ``field`` (dotted,
  e.g. 'augshift.weight') in the training config ``base``."""
  try:
    kind = type(config_field(base, field))
  except (AttributeError, KeyError):
    raise ConfigError(f'sweep field {field!r} is not a field of the training config.') from None
  return field, checks.items(name, values, kind)


def config_field(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value of a dotted field, e.g. ``config_field(run, 'augshift.weight')``."""
  return functools.reduce(lambda c, k: c[k], field.split('.'), config)


def grid(base: ml_collections.ConfigDict, cells: Sequence[tuple[str, Mapping[str, Any]]],
         seeds: int) -> Runs:
  """Every (cell, seed): ``base`` with the cell's dotted fields set and ``seed = base.seed
  + s``, named by the cell's name with ``{seed}`` filled in; cell-major order."""
  runs = []
  for (name, fields), seed in itertools.product(cells, range(seeds)):
    run = copy.deepcopy(base)
    with run.unlocked():
      for field, value in fields.items():
        parent, _, leaf = field.rpartition('.')
        (config_field(run, parent) if parent else run)[leaf] = value
      run.seed = base.seed + seed
    runs.append((name.format(seed=seed), run))
  return runs


def _sweep_label(sweep: Sweep, value: Any) -> str:
  leaf = sweep[0].rpartition('.')[2]
  return f'{leaf}{value:g}' if isinstance(value, float) else f'{leaf}{value}'


def run_configs(config: ml_collections.ConfigDict, sweep: Sweep | None = None) -> Runs:
  """The classification grid of ``config.study``: task x (head, padding) x grid x seed,
  named ``<task>_<head>_<padding>_g<g>_s<seed>``; with a ``sweep``, every value of its
  field for each cell (named ``..._g3_weight0.1_s0``); without, the semantic task on the
  plain image (grid 1, zero padding) for each of ``study.plain_heads``."""
  s = config.study
  tasks, grids = checks.items('study.tasks', s.tasks), checks.items('study.grids', s.grids, int)
  pairs = list(itertools.product(checks.items('study.heads', s.heads),
                                 checks.items('study.paddings', s.paddings)))
  if s.probe_heads:  # Unpermuted networks to probe, where the grid lacks them.
    pairs += [c for c in itertools.product(checks.items('study.probe_heads', s.probe_heads),
                                           checks.items('study.probe_paddings', s.probe_paddings))
              if c not in pairs]
  cells = []
  for task, (head, padding), g, value in itertools.product(
      tasks, pairs, grids, [None] if sweep is None else list(sweep[1])):
    fields = {'task': task, 'model.head': head, 'model.padding': padding, 'data.grid': g}
    label = ''
    if sweep is not None:
      fields[sweep[0]] = value
      label = _sweep_label(sweep, value) + '_'
    cells.append((f'{task}_{head}_{padding}_g{g}_{label}s{{seed}}', fields))
  if s.plain_heads and sweep is None:  # The semantic task on the source image alone.
    cells += [(f'semantic_{head}_zero_g1_s{{seed}}',
               {'task': 'semantic', 'model.head': head, 'model.padding': 'zero', 'data.grid': 1})
              for head in checks.items('study.plain_heads', s.plain_heads)]
  return grid(config.base, cells, s.seeds)


def check_train_seeds(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError unless ``study.train_seeds`` is a mode of `gpjax.core.multirun`."""
  multirun.check_mode(config.study.train_seeds)


def validate_runs(config: ml_collections.ConfigDict, runs: Runs,
                  check: Callable[[ml_collections.ConfigDict], None] = classification.check
                  ) -> None:
  """Checks ``study.seeds`` and every run's training config with ``check`` before any work."""
  if config.study.seeds < 1:
    raise ConfigError(f'config.study.seeds={config.study.seeds!r} must be >= 1.')
  check_train_seeds(config)
  for name, run in runs:
    try:
      check(run)
    except ConfigError as e:
      raise ConfigError(f'run {name}: {e}') from None


@dataclasses.dataclass
class Outcome:
  """What `run_grid` did: each run's training results and each evaluator's output."""
  results: dict[str, dict[str, Any]]  # Run name -> its training results.
  evaluations: dict[str, dict[str, dict[str, Any]]]  # Evaluator -> run name -> its output.
  preempted: dict[str, Any] | None = None  # The results of a preempted run; the grid stopped.


def run_grid(runs: Runs, workdir: str, train_fn: Train,
             evaluators: Mapping[str, Evaluator] | None = None,
             progress: Progress | None = None, train_cell: TrainCell | None = None,
             share: str = 'alone') -> Outcome:
  """Trains every run of ``runs`` not finished yet in ``workdir/runs/<name>`` and calls each
  evaluator on it; stops at a preempted run. ``progress(name, i, n)`` before each run.
  With ``train_cell``, the unfinished runs of a cell (consecutive runs equal but for their
  seeds) are trained together by it (`gpjax.core.multirun.train_group`), else one by one with
  ``train_fn``. ``share`` (`SHARE`): 'alone', or processes of one host working through the
  grid together, each cell (training and evaluators) done by the process that holds its lock
  (`cell_lock`): 'lead' does every cell free and then waits for the others' and reads them;
  'help' does only the free cells (its outcome lacks the others)."""
  if share not in SHARE:
    raise ValueError(f'share={share!r} is not one of {SHARE}.')
  evaluators = evaluators or {}
  outcome = Outcome({}, {e: {} for e in evaluators})
  held = []  # Cells another process held when this one came to them.
  for cell in _cells(runs) if train_cell else [[i] for i in range(len(runs))]:
    with contextlib.nullcontext(True) if share == 'alone' else cell_lock(
        workdir, runs[cell[0]][0], wait=False) as mine:
      if not mine:
        held.append(cell)
      elif _run_cell(runs, cell, workdir, train_fn, evaluators, progress, train_cell, outcome):
        return outcome
  for cell in held if share == 'lead' else ():
    with cell_lock(workdir, runs[cell[0]][0], wait=True):
      if _run_cell(runs, cell, workdir, train_fn, evaluators, progress, train_cell, outcome):
        return outcome
  order = [name for name, _ in runs]  # The runs' order, whichever process did them first.
  outcome.results = {n: outcome.results[n] for n in order if n in outcome.results}
  outcome.evaluations = {e: {n: v[n] for n in order if n in v}
                         for e, v in outcome.evaluations.items()}
  return outcome


def _run_cell(runs: Runs, cell: list[int], workdir: str, train_fn: Train,
              evaluators: Mapping[str, Evaluator], progress: Progress | None,
              train_cell: TrainCell | None, outcome: Outcome) -> bool:
  """`run_grid` on the runs ``cell`` (indices into ``runs``), into ``outcome``; True if a
  run was preempted (``outcome.preempted`` set)."""
  todo = []
  for i in cell:
    name, run = runs[i]
    if progress:
      progress(name, i, len(runs))
    outcome.results[name] = cached(os.path.join(workdir, 'runs', name, 'results.json'))
    if outcome.results[name] is None:
      todo.append(i)
  if todo:
    print(f'[{todo[0] + 1}/{len(runs)}] ' + ', '.join(runs[i][0] for i in todo), flush=True)
    dirs = [os.path.join(workdir, 'runs', runs[i][0]) for i in todo]
    outs = (train_cell([runs[i][1] for i in todo], dirs) if len(todo) > 1
            else [train_fn(runs[todo[0]][1], dirs[0])])
    for i, out in zip(todo, outs):
      if 'preempted_at_step' in out:
        outcome.preempted = out
        return True
      outcome.results[runs[i][0]] = writers.as_json(out)
  for i in cell:
    name, run = runs[i]
    for e, evaluate in evaluators.items():
      outcome.evaluations[e][name] = evaluate(name, run, os.path.join(workdir, 'runs', name))
  return False


@contextlib.contextmanager
def cell_lock(workdir: str, name: str, *, wait: bool) -> Iterator[bool]:
  """Holds ``workdir/.cell_locks/<name>`` (``fcntl.flock``; the kernel drops it when its
  process ends, however it ends) for the block and yields True; without ``wait``, yields
  False at once while another process holds it."""
  directory = os.path.join(workdir, '.cell_locks')
  os.makedirs(directory, exist_ok=True)
  fd = os.open(os.path.join(directory, name), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
      yield False
      return
    yield True
  finally:
    os.close(fd)  # Releases the lock.


def _cells(runs: Runs) -> list[list[int]]:
  """The indices of ``runs`` in groups of consecutive runs whose configs differ only in seed."""
  cells: list[list[int]] = []
  for i, (_, run) in enumerate(runs):
    if cells and multirun.without_seed(runs[cells[-1][-1]][1]) == multirun.without_seed(run):
      cells[-1].append(i)
    else:
      cells.append([i])
  return cells


def cell_trainer(config: ml_collections.ConfigDict, task: Task) -> TrainCell | None:
  """`run_grid`'s ``train_cell`` for ``task``: `gpjax.core.multirun.train_group` in the mode of
  ``study.train_seeds``; None (one run at a time) when that mode is 'sequential'."""
  mode = multirun.resolve(config.study.train_seeds)
  if mode == 'sequential':
    return None
  return functools.partial(multirun.train_group, task=task, mode=mode)


def cached(path: str) -> dict[str, Any] | None:
  """The results.json at ``path`` if a finished step wrote it, else None. Steps that
  run now use their returned results instead of the file: with several processes only
  process 0 writes it, and the others must not wait for it."""
  return writers.read_json(path) if os.path.exists(path) else None


def cached_or(out_dir: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
  """``out_dir/results.json`` if it exists, else ``compute()`` (which writes it), as JSON."""
  result = cached(os.path.join(out_dir, 'results.json'))
  return writers.as_json(compute()) if result is None else result


def at_kept_steps(run: ml_collections.ConfigDict, run_dir: str, out_dir: str,
                  compute: Callable[[int, str], dict[str, Any]]
                  ) -> list[tuple[int, dict[str, Any]]]:
  """An evaluator over training: ``compute(step, dir)`` of each checkpoint of ``run_dir`` at a
  step of ``run.train.keep_at`` (in ``<out_dir>_step<S>``) and of the newest (``compute(0,
  out_dir)``), each cached (`cached_or`). Returns ``[(step, results)]``, the newest last."""
  saved = checkpoint.saved_steps(run_dir)
  kept = [s for s in trainer.step_list(run.train.keep_at) if s in saved[:-1]]
  out = [(s, cached_or(f'{out_dir}_step{s}', functools.partial(compute, s, f'{out_dir}_step{s}')))
         for s in kept]
  return out + [(saved[-1], cached_or(out_dir, functools.partial(compute, 0, out_dir)))]


def write_outputs(workdir: str, summary: dict[str, Any], table: str,
                  figures: Mapping[str, Callable[[str], None]]) -> None:
  """On process 0: ``results.json``, ``table.md`` and each figure ``file -> save(path)``."""
  if jax.process_index() != 0:
    return
  writers.write_json(os.path.join(workdir, 'results.json'), summary)
  with open(os.path.join(workdir, 'table.md'), 'w') as f:
    f.write(table)
  for file, save in figures.items():
    save(os.path.join(workdir, file))


def over_seeds(values: Sequence[float]) -> dict[str, Any]:
  """``{'values', 'mean', 'std'}`` of one number over a cell's seeds."""
  return {'values': list(values), 'mean': float(np.mean(values)), 'std': float(np.std(values))}


def over_steps(results: Sequence[dict[str, Any]], key: str = 'test_accuracy'
               ) -> dict[str, Any] | None:
  """``{'steps', 'values' (seeds x steps), 'mean', 'std'}`` of ``key`` over the evaluations
  of a cell's runs (their ``curve``), at the steps every run evaluated; None without."""
  if not all('curve' in r for r in results):
    return None
  by_step = [{e['step']: e[key] for e in r['curve'] if key in e} for r in results]
  steps = sorted(set.intersection(*(set(b) for b in by_step)))
  if not steps:
    return None
  values = np.array([[b[s] for s in steps] for b in by_step])
  return {'steps': steps, 'values': values.tolist(), 'mean': values.mean(0).tolist(),
          'std': values.std(0).tolist()}


def summarize(runs: Runs, results: Mapping[str, dict[str, Any]], sweep: Sweep | None = None,
              metrics: Mapping[str, dict[str, float]] | None = None,
              metric_curves: Mapping[str, list[dict[str, Any]]] | None = None
              ) -> dict[str, Any]:
  """Mean and std over seeds of test accuracy (and of each evaluated metric, ``metrics``:
  run name -> {metric: float}) for every (task, head, padding, grid) and sweep value; each
  cell's ``curve`` (`over_steps`) where its runs recorded one, and ``metric_curves`` (metric
  -> `over_steps`) from ``metric_curves``: run name -> [{'step', metric: float}]."""
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
    curve = over_steps([results[n] for n in names])
    if curve is not None:
      cell['curve'] = curve
    if sweep is not None:
      cell['sweep'] = key[4]
    if metrics:
      cell['metrics'] = {m: over_seeds([metrics[n][m] for n in names]) for m in metrics[names[0]]}
    if metric_curves:
      cell['metric_curves'] = {m: over_steps([{'curve': metric_curves[n]} for n in names], m)
                               for m in metrics[names[0]]}
    cells.append(cell)
  summary = {'cells': cells, 'runs': {n: results[n]['test_accuracy'] for n, _ in runs}}
  if sweep is not None:
    summary['sweep_field'] = sweep[0]
  if metrics:
    summary['evaluations'] = dict(metrics)
  return summary


def markdown_table(summary: dict[str, Any]) -> str:
  """Rows: padding (and grid); columns: task x head; cells: mean ± std in %."""
  cols = study_figures.columns(summary)
  field = summary.get('sweep_field')  # Absent without a sweep: no column for it.
  index = {(c['task'], c['head'], c['padding'], c['grid'], c.get('sweep')): c
           for c in summary['cells']}
  rows = list(dict.fromkeys((c['padding'], c['grid'], c.get('sweep')) for c in summary['cells']))
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
  permuted = any(c['head'] == 'permutenet' for c in summary['cells'])
  lines.append('Test accuracy in %, mean ± std over seeds' + (
      ' (PermuteNet: the mean over its test orderings, as the official test)' if permuted
      else '') + '. Chance: ' + ', '.join(f'{t} g={g} {100 * p:.1f}%' for t, g, p in chance) + '.')
  return '\n'.join(lines) + '\n'


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
