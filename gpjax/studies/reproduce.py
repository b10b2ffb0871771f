r"""The paper's findings from one command: runs a suite of studies and writes REPORT.md.

  python -m gpjax.main --config=configs/reproduce.py:quick --workdir=runs/reproduce
  python -m gpjax.main --config=configs/reproduce.py:paper --workdir=runs/paper \
      --config.data_dir=~/tensorflow_datasets

A suite (configs/reproduce.py) is three studies, each the config of its own job:
``location`` (GAPNet vs PermuteNet over tasks and paddings, and permutation probes of
unpermuted networks at layers 1..5), ``augshift`` (lambda 0 vs AugShift, invariance
measured) and ``segmentation`` (DeepLabv3, channel ranking, overall and region attacks).
Each writes into ``workdir/<study>``; a study whose results.json exists is skipped and
an unfinished one resumes run by run, so rerunning a killed suite continues it. Then
`gpjax.studies.claims` turns the numbers into one verdict per claim, and ``results.json``
(numbers, versions, device, ``claims``), ``REPORT.md`` and ``summary.png`` are written.
"""

import copy
import importlib.metadata
import math
import os
import platform
import shlex
import threading
import time
from typing import Any, Callable

import ml_collections
import tqdm

from gpjax import checks
from gpjax import compilation_cache
from gpjax.core import spawn
from gpjax.core import writers
from gpjax.data import input_pipeline, segmentation
from gpjax.errors import ConfigError, DatasetNotPreparedError
from gpjax.job import Job
from gpjax.studies import augshift as augshift_study
from gpjax.studies import claims as claims_lib
from gpjax.studies import grid as study
from gpjax.studies import location, report
from gpjax.studies import segmentation as segment_study

SUITES = ('micro', 'quick', 'standard', 'paper')  # configs/reproduce.py's variants.
EXPERIMENTS = ('location', 'augshift', 'segmentation')
# Study -> (runner(config, workdir, progress), check, its runs).
_STUDIES = {
    'location': (location.run_study, location.check, location.all_runs),
    'augshift': (augshift_study.run_study, augshift_study.check, augshift_study.runs),
    'segmentation': (segment_study.run_study, segment_study.check, segment_study.runs),
}
_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy',
             'tensorflow-datasets', 'gpjax')


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the suite's own fields, what the verdicts read, and every study's config."""
  if config.suite not in SUITES:
    raise ConfigError(f'config.suite={config.suite!r} is not allowed; choose one of {SUITES}.')
  checks.items('classification_data', config.classification_data)
  checks.items('segmentation_data', config.segmentation_data)
  groups = config.study_processes
  names = [n for g in groups for n in g] if isinstance(groups, (tuple, list)) and all(
      isinstance(g, (tuple, list)) and g for g in groups) else None
  if names is None or sorted(names) != sorted(EXPERIMENTS):
    raise ConfigError(f'config.study_processes={groups!r} is not allowed; give tuples of studies, '
                      f'one per process, that name each of {EXPERIMENTS} once, e.g. '
                      "(('location',), ('augshift', 'segmentation')).")
  for name in EXPERIMENTS:
    try:
      _STUDIES[name][1](config[name])
    except ConfigError as e:
      raise ConfigError(str(e).replace('config.', f'config.{name}.')) from None
  s, t = config.location.study, config.claims
  needed = {'tasks': ('location', 'semantic'), 'heads': ('gapnet', 'permutenet'),
            'paddings': ('zero',), 'grids': (t.grid,)}
  for field, values in needed.items():
    have = checks.items(f'location.study.{field}', s[field], type(values[0]))
    missing = [v for v in values if v not in have]
    if missing:
      raise ConfigError(f'config.location.study.{field}={s[field]!r} lacks {missing}: the '
                        'verdicts read them (config.claims).')
  weights = checks.items('augshift.study.sweep_values', config.augshift.study.sweep_values,
                         float)
  for w, why in ((0.0, 'the baseline'), (t.augshift_weight, 'config.claims.augshift_weight')):
    if w not in weights:
      raise ConfigError(f'config.augshift.study.sweep_values={config.augshift.study.sweep_values!r}'
                        f' lacks {w:g} ({why}).')


def _first_prepared(field: str, names: list[str], load: Callable[[str], Any]) -> str:
  """The first data set of ``names`` that ``load`` opens."""
  for name in names:
    try:
      load(name)
      return name
    except DatasetNotPreparedError:
      print(f'{field}: {name} is not prepared, trying the next one', flush=True)
  raise ConfigError(f'config.{field}={tuple(names)!r}: none of these is prepared in the '
                    'data dir; end the tuple with a built-in set.')


def resolve_data(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of ``config`` whose studies read the first prepared data sets of the lists."""
  data_dir = config.data_dir or None
  def first(field, load):
    return _first_prepared(field, checks.items(field, config[field]), load)

  classification = first('classification_data',
                         lambda n: input_pipeline.load_source(n, 'train', data_dir=data_dir))
  segmentation_set = first('segmentation_data',
                           lambda n: segmentation.load_segmentation(n, 'train', data_dir=data_dir))
  resolved = copy.deepcopy(config)
  for name in ('location', 'augshift'):
    resolved[name].base.data.name = classification
    resolved[name].base.data.data_dir = config.data_dir
  data = resolved.segmentation.base.data
  data.name, data.data_dir = segmentation_set, config.data_dir
  if segmentation_set.startswith('cityscapes'):  # The official crops, flips and jitter.
    data.crop_height = data.crop_width = config.cityscapes_crop
    data.flip = config.cityscapes_flip
    data.color_jitter = config.cityscapes_color_jitter
  return resolved


def _flat(d: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f'{prefix}{k}.') if isinstance(v, dict) else {f'{prefix}{k}': v})
  return out


def study_command(name: str, config: ml_collections.ConfigDict, suite: ml_collections.ConfigDict,
                  workdir: str) -> str:
  """The gpjax.main command that runs study ``name`` exactly as the suite does: its config
  file (``suite.study_files``) with every field that differs from that file's defaults
  (``suite.study_defaults``)."""
  file = suite.study_files[name]
  default = _flat(suite.study_defaults[name].to_dict())
  changed = {k: v for k, v in _flat(config.to_dict()).items() if default.get(k) != v}
  return ' '.join([f'python -m gpjax.main --config={file}',
                   f'--workdir={shlex.quote(os.path.join(workdir, name))}'] +
                  [f'--config.{k}={shlex.quote(str(v))}' for k, v in changed.items()])


def _units(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Training runs of each study, for the progress bar."""
  return {name: len(_STUDIES[name][2](config[name])) for name in EXPERIMENTS}


class _Progress:
  """One bar over every training run of the suite; its label names each study's current run
  (studies in other processes report theirs through `run_studies`'s ``on_message``)."""

  def __init__(self, units: dict[str, int]):
    self.units, self.runs_done, self.current = units, dict.fromkeys(units, 0), {}
    self.bar = tqdm.tqdm(total=sum(units.values()), desc='suite', unit='run', position=0,
                         dynamic_ncols=True, disable=None)

  def update(self, name: str, run: str, i: int, helping: bool = False) -> None:
    """Study ``name`` is at its run ``i`` in its own process, or in a helping one."""
    self.runs_done[name] = max(self.runs_done[name], i)
    self.current[f'{name} (helper)' if helping else name] = run
    self._show()

  def done(self, name: str) -> None:
    self.runs_done[name] = self.units[name]
    self.current.pop(name, None)
    self.current.pop(f'{name} (helper)', None)
    self._show()

  def _show(self) -> None:
    self.bar.n = sum(self.runs_done.values())
    self.bar.set_description(' | '.join(f'{k}: {v}' for k, v in self.current.items())
                             or 'suite')


def _finite(x: Any) -> Any:
  """NaN/inf -> None, so results.json stays strict JSON."""
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  return None if isinstance(x, float) and not math.isfinite(x) else x


def _environment() -> tuple[dict[str, str], dict[str, Any]]:
  import jax
  versions = {'python': platform.python_version()}
  for package in _PACKAGES:
    try:
      versions[package.replace('-', '_')] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package.replace('-', '_')] = None
  d = jax.devices()
  kind, (cpu, vectors) = d[0].device_kind, _cpu()
  fingerprint = compilation_cache.cpu_fingerprint()
  description = (f'{len(d)} x {kind}' + (
      f' ({os.cpu_count()} CPU cores, {cpu}, {vectors}, CPU id {fingerprint or "unknown"})'
      if d[0].platform == 'cpu' else ''))
  return versions, {'platform': d[0].platform, 'kind': kind, 'count': len(d),
                    'processes': jax.process_count(), 'cpu_cores': os.cpu_count(),
                    'cpu_model': cpu, 'cpu_vectors': vectors, 'cpu_id': fingerprint,
                    'description': description}


def _cpu() -> tuple[str, str]:
  """The host CPU's model name and widest vector instructions (XLA:CPU's float results depend
  on both: two 'AMD EPYC' of other generations give other numbers), or 'unknown'."""
  model, flags = platform.processor() or 'unknown CPU', set()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          model = line.split(':', 1)[1].strip()
        elif line.startswith('flags'):
          flags = set(line.split(':', 1)[1].split())
  except OSError:
    pass
  vectors = ('AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else
             'AVX' if 'avx' in flags else 'vector width unknown')
  return model, vectors


def process_groups(config: ml_collections.ConfigDict) -> tuple[tuple[str, ...], ...]:
  """The studies each process runs in order (``config.study_processes``) where this is a CPU
  host in one process; elsewhere one group, every study one after another (on an accelerator
  the processes would share its memory)."""
  import jax
  groups = tuple(tuple(g) for g in config.study_processes)
  if len(groups) > 1 and (jax.default_backend() != 'cpu' or jax.process_count() > 1):
    print(f'Studies one after another: config.study_processes applies to one process on a CPU '
          f'host (here {jax.process_count()} on {jax.default_backend()}).', flush=True)
    return (sum(groups, ()),)
  return groups


def _run_in_order(config: ml_collections.ConfigDict, workdir: str, names: tuple[str, ...],
                  others: tuple[str, ...], send: Callable[[tuple[Any, ...]], None]
                  ) -> tuple[dict[str, Any], dict[str, Any] | None]:
  """Runs the studies ``names`` one after another in ``workdir/<study>``, each unless its
  results.json exists (then read back); then helps with the unfinished studies ``others``
  that other processes run (`grid.run_grid`'s 'help': the cells no process holds yet; with
  ``others``, this process's own studies share their cells as 'lead'). ``send`` gets ('run',
  study, run, i) or ('help', study, run, i) before each run, and ('done', study, seconds or
  None if skipped) after each own study. Returns (study -> summary of ``names``, the results
  of a preempted run or None). In the suite's process, or in another (`gpjax.core.spawn`)."""
  experiments = {}

  def run(name: str, share: str) -> dict[str, Any]:  # Its progress messages say how it runs.
    kind = 'help' if share == 'help' else 'run'
    return _STUDIES[name][0](config[name], os.path.join(workdir, name),
                             lambda run, i, n: send((kind, name, run, i)), share)

  for name in names:
    experiments[name] = study.cached(os.path.join(workdir, name, 'results.json'))
    if experiments[name] is not None:
      send(('done', name, None))
      continue
    start = time.perf_counter()
    result = run(name, 'lead' if others else 'alone')
    if 'preempted_at_step' in result:
      return experiments, result
    experiments[name] = writers.as_json(result)
    send(('done', name, time.perf_counter() - start))
  for name in others:
    if study.cached(os.path.join(workdir, name, 'results.json')) is None:
      result = run(name, 'help')
      if 'preempted_at_step' in result:
        return experiments, result
  return experiments, None


def run_studies(config: ml_collections.ConfigDict, workdir: str,
                groups: tuple[tuple[str, ...], ...]
                ) -> tuple[dict[str, Any], dict[str, float], dict[str, Any] | None]:
  """Runs the suite's studies (`_run_in_order`): the first group of ``groups`` here, each
  other group at the same time in a process of its own whose output goes to
  ``workdir/<its studies>.log``. Returns (study -> summary, study -> seconds of the run that
  finished it, the results of a preempted run or None)."""
  import jax
  timing_path = os.path.join(workdir, 'timing.json')
  timing = writers.read_json(timing_path) if os.path.exists(timing_path) else {}
  units = _units(config)
  print(f'Suite {config.suite}: ' + ', '.join(f'{n} {u} runs' for n, u in units.items()) +
        '; finished studies are skipped.', flush=True)
  progress, lock = _Progress(units), threading.Lock()

  def others(names: tuple[str, ...]) -> tuple[str, ...]:  # What a process helps with after.
    return tuple(n for g in groups if g != names for n in g)

  def on_message(message: tuple[Any, ...]) -> None:
    kind, name, value, *i = message
    with lock:
      if kind in ('run', 'help'):
        progress.update(name, value, *i, helping=kind == 'help')
        return
      progress.done(name)
      if value is None:
        tqdm.tqdm.write(f'{name}: finished earlier, skipped')
      else:
        timing[name] = value
        if jax.process_index() == 0:
          writers.write_json(timing_path, timing)

  children = []
  try:
    for names in groups[1:]:
      log = os.path.join(workdir, '_'.join(names) + '.log')
      children.append(spawn.Child(_run_in_order, (config, workdir, names, others(names)), log,
                                  on_message))
      tqdm.tqdm.write(f'{", ".join(names)}: in process {children[-1].process.pid} beside this '
                      f'one, its output appended to {log}')
    experiments, preempted = _run_in_order(config, workdir, groups[0], others(groups[0]),
                                           on_message)
    for child in children if preempted is None else ():
      if child.process.is_alive():
        tqdm.tqdm.write(f'Waiting for process {child.process.pid} ({child.log_path})')
      done, preempted = child.wait()
      experiments.update(done)
      if preempted is not None:
        break
  finally:
    for child in children:
      child.stop()
    progress.bar.close()
  if preempted is None:
    experiments = {n: experiments[n] for n in EXPERIMENTS}
  return experiments, timing, preempted


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every study of the suite not finished yet, then judges the claims and writes
  results.json, REPORT.md and summary.png. Returns the results (or the preemption)."""
  import jax
  validate_config(config)
  lead = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  resolved = resolve_data(config)
  groups = process_groups(config)
  experiments, timing, preempted = run_studies(resolved, workdir, groups)
  if preempted is not None:
    return preempted
  t = config.claims
  claims = {**claims_lib.judge_location(experiments['location'], t),
            **claims_lib.judge_augshift(experiments['augshift'], t),
            **claims_lib.judge_attack(experiments['segmentation'], t)}
  versions, device = _environment()
  results = _finite({
      'suite': config.suite,
      'command': (f'python -m gpjax.main --config=configs/reproduce.py:{config.suite} '
                  f'--workdir={shlex.quote(workdir)}'),
      # The processes ran at once, each its group in order.
      'wall_seconds': max(sum(timing.get(n, 0.0) for n in g) for g in groups),
      'timing_seconds': {n: timing.get(n, 0.0) for n in EXPERIMENTS},
      'study_processes': [list(g) for g in groups],
      'versions': versions, 'device': device,
      'data': {'classification': resolved.location.base.data.name,
               'segmentation': resolved.segmentation.base.data.name},
      'claims': claims,
      'claim_curves': claims_lib.over_steps(experiments, t),
      'study_commands': {n: study_command(n, resolved[n], config, workdir)
                         for n in EXPERIMENTS},
      'experiments': experiments, 'config': config.to_dict()})
  if lead:
    writers.write_json(os.path.join(workdir, 'results.json'), results)
    path = report.write_report(workdir, results)
    width = max(map(len, claims))
    print('\n'.join(f'{k:<{width}}  {claims_lib.verdict(c)}' for k, c in claims.items()) +
          f'\nReport: {path}', flush=True)
  return results


JOBS = {'reproduce': Job(run, validate_config, "the paper's claims from the three studies: "
                                               'REPORT.md with a verdict per claim')}
