"""gpjax.studies.reproduce end to end: the micro suite, killed midway and rerun, and its report."""

import ast
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from configs import reproduce as suites
from gpjax import compilation_cache
from gpjax.studies import claims
from gpjax.studies import reproduce
from gpjax.studies import segmentation as segment_study
from gpjax.core import writers
from gpjax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLAIMS = ('gap_location', 'permute_location', 'permute_semantic', 'augshift', 'overall_attack',
          'region_attack')


def _command(workdir, data_dir):
  return [sys.executable, '-m', 'gpjax.main', '--config=configs/reproduce.py:micro',
          f'--workdir={workdir}', f'--config.data_dir={data_dir}']


def _wait_for(path, proc, timeout=600):
  start = time.time()
  while not os.path.exists(path):
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    assert time.time() - start < timeout, f'{path} did not appear'
    time.sleep(0.2)


def _alive(pid):
  """Whether process ``pid`` exists and is not a zombie."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except FileNotFoundError:
    return False


@pytest.fixture(scope='module')
def suite(tmp_path_factory, env, builtin_dir):
  """The micro suite (location here, segmentation then AugShift in a second process, each
  process then helping with the other's cells) killed (SIGKILL) once two location runs have
  finished, then rerun to the end. Returns (workdir, rerun output, the second process's log
  of the rerun, mtimes of the results written before the kill)."""
  workdir = tmp_path_factory.mktemp('reproduce') / 'micro'
  data_dir = builtin_dir('gpjax_digits')
  builtin_dir('gpjax_street')
  proc = subprocess.Popen(_command(workdir, data_dir), env=env, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  location_runs = workdir / 'location' / 'runs'  # This process's second run, then a kill.
  _wait_for(location_runs / 'location_permutenet_zero_g3_s0' / 'results.json', proc)
  proc.send_signal(signal.SIGKILL)
  output = proc.communicate()[0]
  child = int(re.search(r'segmentation, augshift: in process (\d+) ', output).group(1))
  start = time.time()
  while _alive(child):  # It follows its parent within half a second.
    assert time.time() - start < 10, 'the second process outlived the suite'
    time.sleep(0.1)
  assert not (workdir / 'results.json').exists()  # Killed before the end.
  assert not (workdir / 'location' / 'results.json').exists()
  assert not (workdir / 'segmentation' / 'results.json').exists()
  before = {p: os.path.getmtime(p) for p in location_runs.glob('*/results.json')}
  log = workdir / 'segmentation_augshift.log'
  killed_log = log.stat().st_size
  rerun = subprocess.run(_command(workdir, data_dir), env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=900)
  assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
  return workdir, rerun.stdout + rerun.stderr, log.read_bytes()[killed_log:].decode(), before


def test_rerun_skips_finished_work(suite):
  workdir, output, log, before = suite
  assert len(before) >= 2
  for path, mtime in before.items():  # Neither rewritten nor retrained.
    assert os.path.getmtime(path) == mtime, path
    assert f'] {os.path.basename(os.path.dirname(path))}' not in output + log, path
  finished = {os.path.basename(os.path.dirname(p)) for p in before}
  unfinished = {p.name for p in (workdir / 'location' / 'runs').iterdir()} - finished
  # Trained in the rerun by one process or the other (each helps with the other's studies).
  assert unfinished and all(f'] {name}' in output + log for name in unfinished), unfinished
  assert '] semantic_linear_zero_g3_weight1_s0' in output + log  # An unfinished AugShift run.


def test_results_json_is_complete(suite):
  workdir = suite[0]
  results = writers.read_json(workdir / 'results.json')
  assert tuple(results['claims']) == CLAIMS
  for key, claim in results['claims'].items():
    assert isinstance(claim['holds'], bool), key
    assert claim['evidence'] and claim['rule'], key
  assert results['suite'] == 'micro'
  assert results['versions']['jax'] and results['device']['platform'] == 'cpu'
  device = results['device']  # Two CPUs of one model name can round differently: named apart.
  assert device['cpu_id'] == compilation_cache.cpu_fingerprint() != ''
  with open('/proc/cpuinfo') as f:
    avx512 = ' avx512f ' in f.read().replace('\n', ' ')
  assert (device['cpu_vectors'] == 'AVX-512') == avx512
  assert f"{device['cpu_vectors']}, CPU id {device['cpu_id']})" in device['description']
  assert results['data'] == {'classification': 'gpjax_digits', 'segmentation': 'gpjax_street'}
  assert results['study_processes'] == [['location'], ['segmentation', 'augshift']]
  timing = results['timing_seconds']  # The two processes ran at once.
  assert results['wall_seconds'] == pytest.approx(
      max(timing['location'], timing['augshift'] + timing['segmentation']))
  assert all(results['timing_seconds'][k] > 0 for k in ('location', 'augshift', 'segmentation'))
  # The verdicts are those the numbers give under the suite's thresholds.
  t = suites.get_config('micro').claims
  e = results['experiments']
  again = {**claims.judge_location(e['location'], t), **claims.judge_augshift(e['augshift'], t),
           **claims.judge_attack(e['segmentation'], t)}
  assert {k: c['holds'] for k, c in again.items()} == {
      k: c['holds'] for k, c in results['claims'].items()}
  gap = claims.cell(e['location'], 'location', 'gapnet', 'zero', 3)
  assert results['claims']['gap_location']['evidence']['accuracy'] == gap['mean']
  run = writers.read_json(workdir / 'location' / 'runs' / 'location_gapnet_zero_g3_s0' /
                          'results.json')
  assert gap['mean'] == run['test_accuracy']  # One seed in the micro suite.


def test_report_agrees_with_results(suite):
  workdir = suite[0]
  results = writers.read_json(workdir / 'results.json')
  report = (workdir / 'REPORT.md').read_text()
  for key, claim in results['claims'].items():
    verdict = 'holds' if claim['holds'] else 'does not hold'
    section = report.split(f'(`{key}`)\n', 1)[1].split('\n## ', 1)[0]
    assert f'**Verdict: {verdict}.**' in section, key
    assert re.search(rf'\| `{key}`: [^|]+\| \*\*{verdict}\*\* \|', report), key
  gap = results['claims']['gap_location']['evidence']
  assert f'{100 * gap["accuracy"]:.1f}% ± {100 * gap["std"]:.1f}% location accuracy' in report
  cell = claims.cell(results['experiments']['location'], 'location', 'permutenet', 'zero', 3)
  row = f'| zero | 3 | {100 * gap["accuracy"]:.1f} ± 0.0 (n=1) | {100 * cell["mean"]:.1f} '
  assert row in report
  for command in results['study_commands'].values():
    assert command in report
  figures = re.findall(r'!\[[^]]*\]\(([^)]+)\)', report)
  assert 'summary.png' in figures and 'location/accuracy.png' in figures
  assert 'segmentation/curves.png' in figures and 'augshift/metrics.png' in figures
  assert 'claim_curves.png' in figures and 'location/layer_protocol.png' in figures
  # The curves: the micro suite evaluates (and keeps AugShift's checkpoint) at step 6 and at
  # its last step, 12; it attacks the 4-step segmentation runs at steps 2 and 4.
  curves = results['claim_curves']
  for key, claim in results['claims'].items():
    assert curves[key]['steps'] == ([2, 4] if 'attack' in key else [6, 12]), key
    assert curves[key]['holds'][-1] == claim['holds'], key
  assert report.count('Over training steps (6: ') == 4  # Three location claims, AugShift.
  assert report.count('Over training steps (2: ') == 2
  for figure in figures:
    assert (workdir / figure).stat().st_size > 1000, figure
  assert results['command'] in report


def _apply_overrides(config, command):
  """Sets each ``--config.a.b=v`` of a gpjax.main command on ``config`` (typed like the field)."""
  for arg in shlex.split(command):
    if arg.startswith('--config.'):
      field, value = arg[len('--config.'):].split('=', 1)
      *parents, leaf = field.split('.')
      node = config
      for p in parents:
        node = node[p]
      kind = type(node[leaf])
      node[leaf] = ((value == 'True') if kind is bool else
                    ast.literal_eval(value) if kind is tuple else kind(value))
  return config


def test_study_commands_rebuild_the_suites_studies(suite):
  """Each printed gpjax.main command, applied to its config file, gives the study the suite ran."""
  workdir = suite[0]
  results = writers.read_json(workdir / 'results.json')
  modules = {'location': suites.study, 'augshift': suites.augshift_study,
             'segmentation': suites.segmentation_study}
  config = suites.get_config('micro')
  config.data_dir = results['config']['data_dir']
  resolved = reproduce.resolve_data(config)
  for name, module in modules.items():
    rebuilt = _apply_overrides(module.get_config(), results['study_commands'][name])
    assert rebuilt.to_dict() == resolved[name].to_dict(), name


def test_segmentation_study_ranks_attacks_and_skips_on_rerun(suite):
  """The suite's segmentation study (one tiny DeepLabv3-ResNet-18 of 32 channels, attacked
  at its kept step 2 and its last step 4): files, rankings, the table's rows; the study run
  again over its workdir trains and attacks nothing and gives the same table."""
  workdir = suite[0]
  seg = workdir / 'segmentation'
  for name in ('results.json', 'table.md', 'curves.png', 'runs/seed0/results.json',
               'runs/seed0/metrics.jsonl', 'attacks/seed0/results.json',
               'attacks/seed0/ranking.json', 'attacks/seed0/curves.png'):
    assert os.path.getsize(seg / name) > 0, name
  assert (seg / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  out = writers.read_json(seg / 'results.json')
  attacked = writers.read_json(seg / 'attacks/seed0/results.json')
  ranking = writers.read_json(seg / 'attacks/seed0/ranking.json')
  c = attacked['num_channels']
  assert c == 32 and attacked['counts'] == [0, 2, 8]  # N = 64 > C: skipped, and said so.
  assert attacked['skipped_counts'] == [64]
  assert all(sorted(ranking[k]) == list(range(c)) for k in ('overall', 'left', 'right'))
  # The clean row is the trained model's own evaluation, exactly.
  assert attacked['clean']['whole'] == out['test_miou_per_seed'][0]
  assert out['table']['clean']['mean']['whole'] == attacked['clean']['whole']
  assert out['table']['top-N overall']['mean']['left'] == attacked['top_overall']['left'][2]
  table = (seg / 'table.md').read_text()
  assert '| top-N left |' in table and '| random N |' in table
  # Over training: the kept step-2 checkpoint is attacked as well; the last table is the final.
  assert out['over_steps']['steps'] == [2, 4]
  assert out['over_steps']['tables'][-1] == out['table']
  early = writers.read_json(seg / 'attacks/seed0_step2/results.json')
  assert out['over_steps']['tables'][0]['clean']['mean']['whole'] == early['clean']['whole']
  assert early['clean']['whole'] != attacked['clean']['whole']
  config = suites.get_config('micro')
  config.data_dir = writers.read_json(workdir / 'results.json')['config']['data_dir']
  resolved = reproduce.resolve_data(config).segmentation
  modified = {p: os.path.getmtime(p) for p in (seg / 'runs/seed0/results.json',
                                               seg / 'attacks/seed0/results.json')}
  assert segment_study.run_study(resolved, str(seg))['table'] == out['table']
  assert {p: os.path.getmtime(p) for p in modified} == modified  # Neither retrained nor attacked.


def _comparable(tree, workdir):
  """``tree`` without wall times, its paths under ``workdir`` made relative to it."""
  if isinstance(tree, dict):
    return {k: _comparable(v, workdir) for k, v in tree.items()
            if k not in ('seconds', 'wall_seconds', 'timing_seconds')}
  if isinstance(tree, list):
    return [_comparable(v, workdir) for v in tree]
  return tree.replace(str(workdir), '<workdir>') if isinstance(tree, str) else tree


def test_augshift_study_rerun_in_a_fresh_workdir_gives_the_same_results(suite, env, tmp_path):
  """The suite's AugShift study run again by its printed command into a fresh workdir: the
  same results.json bit for bit, wall times and workdir paths aside."""
  workdir = suite[0]
  command = shlex.split(writers.read_json(workdir / 'results.json')['study_commands']['augshift'])
  command = [sys.executable] + [f'--workdir={tmp_path}' if a.startswith('--workdir=') else a
                                for a in command[1:]]
  out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  first = _comparable(writers.read_json(workdir / 'augshift' / 'results.json'), workdir / 'augshift')
  again = _comparable(writers.read_json(tmp_path / 'results.json'), tmp_path)
  assert again == first


def test_bad_suite_configs_name_the_field():
  config = suites.get_config('micro')
  config.location.study.paddings = ('circular',)
  with pytest.raises(ConfigError,
                     match=r"config.location.study.paddings=\('circular',\) lacks \['zero'\]"):
    reproduce.validate_config(config)
  config = suites.get_config('micro')
  config.claims.augshift_weight = 3.0
  with pytest.raises(ConfigError, match=r'config.augshift.study.sweep_values=.* lacks 3'):
    reproduce.validate_config(config)
  for groups in ((('location',), ('augshift',)), (('location', 'augshift', 'location'),
                                                  ('segmentation',)), ('location',), ()):
    config = suites.get_config('micro')  # A study left out, one twice, not tuples, none.
    config.study_processes = groups
    with pytest.raises(ConfigError, match=r"config.study_processes=.* name each of \('location', "
                                          r"'augshift', 'segmentation'\) once"):
      reproduce.validate_config(config)
  config = suites.get_config('micro')
  config.location.study.seeds = 0
  with pytest.raises(ConfigError, match=r'config.location.study.seeds=0'):
    reproduce.validate_config(config)
  for name in suites.SUITES:
    reproduce.validate_config(suites.get_config(name))


def test_first_prepared_data_set():
  from gpjax.errors import DatasetNotPreparedError

  def load(name):
    if name != 'gpjax_digits':
      raise DatasetNotPreparedError(name)

  assert reproduce._first_prepared('f', ['cifar10', 'gpjax_digits'], load) == 'gpjax_digits'
  with pytest.raises(ConfigError, match=r"config.f=\('cifar10',\): none of these is prepared"):
    reproduce._first_prepared('f', ['cifar10'], load)
