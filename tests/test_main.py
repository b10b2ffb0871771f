"""``python -m gpjax.main`` with a mistake exits non-zero with one clear line on
stderr, naming the field, the value and what is allowed, and no traceback."""

import json
import os
import subprocess
import sys

import pytest

from configs import micro

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_RUN = '/nonexistent/gpjax_run'  # A source workdir that does not exist.
NOT_A_CHECKPOINT = 'README.md'  # A file that exists but is no torch.save file.
# Configs with a config.data.data_dir: each case points it at a folder that does not exist.
TRAINING_CONFIGS = ('micro.py', 'location.py', 'semantic.py', 'segmentation.py')

# name: (arguments after `python -m gpjax.main`, extra environment, words the line must hold).
# Every case stops before training; '{w}' is the case's own workdir.
CASES = {
    'typo_in_field': (['--config=configs/micro.py', '--config.model.paddin=zero'], {},
                      ['paddin', 'padding']),  # The field and the suggestion.
    'unknown_value': (['--config=configs/micro.py', '--config.model.padding=foo'], {},
                      ['config.model.padding', "'foo'", 'zero', 'circular', 'reflect',
                       'replicate', 'partial', 'none']),
    'wrong_type': (['--config=configs/micro.py', '--config.model.width=wide'], {},
                   ['config.model.width', 'wide', 'int']),
    'batch_not_divisible': (
        ['--config=configs/micro.py', '--config.train.batch_size=12'],
        {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'},
        ['config.train.batch_size', '12', 'divisible', '8']),
    'missing_workdir': (['--config=configs/micro.py', None], {}, ['--workdir']),
    'unknown_optimizer': (['--config=configs/micro.py', '--config.train.optimizer=rmsprop'], {},
                          ['config.train.optimizer', "'rmsprop'", 'adam', 'sgd']),
    'negative_steps': (['--config=configs/micro.py', '--config.train.steps=-3'], {},
                       ['config.train.steps=-3', 'an int >= 0']),
    'no_length': (['--config=configs/micro.py', '--config.train.steps=0',
                   '--config.train.epochs=0'], {}, ['config.train.steps=0', 'epochs=0']),
    'unknown_head': (['--config=configs/micro.py', '--config.model.head=maxpool'], {},
                     ['config.model.head', "'maxpool'", 'gapnet', 'permutenet', 'linear']),
    'unknown_task_variant': (['--config=configs/micro.py:nosuchtask'], {},
                             ['configs/micro.py:nosuchtask', "'nosuchtask'", 'location',
                              'semantic']),
    'imported_without_file': (['--config=configs/location.py:imported'], {},
                              ['config.source.torch_checkpoint', "''", 'not a file']),
    'imported_not_a_checkpoint': (['--config=configs/location.py:imported',
                                   f'--config.source.torch_checkpoint={NOT_A_CHECKPOINT}'], {},
                                  ['config.source.torch_checkpoint', NOT_A_CHECKPOINT,
                                   'not a PyTorch checkpoint']),
    'unknown_init': (['--config=configs/micro.py', '--config.model.init=kaiming'], {},
                     ['config.model.init', "'kaiming'", 'flax', 'pytorch']),
    'unknown_task': (['--config=configs/micro.py', '--config.task=color'], {},
                     ['config.task', "'color'", 'location', 'semantic']),
    'unknown_dtype': (['--config=configs/micro.py', '--config.model.dtype=float16'], {},
                      ['config.model.dtype', "'float16'", 'float32', 'bfloat16']),
    'unknown_placement': (['--config=configs/semantic.py',
                           '--config.augshift.placement=diagonal'], {},
                          ['config.augshift.placement', "'diagonal'", 'cell', 'pixel']),
    'augshift_on_location': (['--config=configs/location.py', '--config.augshift.enabled=True'],
                             {}, ['config.augshift.enabled=True', "config.task='location'"]),
    'probe_source_missing': (['--config=configs/permutation_probe.py',
                              f'--config.probe.source_workdir={NO_RUN}'], {},
                             ['config.probe.source_workdir', NO_RUN, 'does not exist']),
    'probe_layer': (['--config=configs/permutation_probe.py', '--config.probe.layer=9'], {},
                    ['config.probe.layer=9', '(1, 2, 3, 4, 5)']),
    'invariance_source_missing': (['--config=configs/augshift.py:invariance',
                                   f'--config.invariance.source_workdir={NO_RUN}'], {},
                                  ['config.invariance.source_workdir', NO_RUN]),
    'segment_backbone': (['--config=configs/segmentation.py', '--config.model.backbone=resnet7'],
                         {}, ['config.model.backbone', "'resnet7'", 'resnet18', 'resnet50']),
    'segment_dropout': (['--config=configs/segmentation.py', '--config.model.dropout=1.5'], {},
                        ['config.model.dropout=1.5', '[0, 1)']),
    'segment_pretrained_width': (['--config=configs/segmentation.py',
                                  f'--config.model.pretrained_backbone={NOT_A_CHECKPOINT}'], {},
                                 ['config.model.width=8', 'pretrained_backbone', 'width 64']),
    'segment_pretrained_not_a_checkpoint': (
        ['--config=configs/segmentation.py:gpu',
         f'--config.model.pretrained_backbone={NOT_A_CHECKPOINT}'], {},
        ['config.model.pretrained_backbone', NOT_A_CHECKPOINT, 'not a PyTorch checkpoint']),
    'attack_no_source': (['--config=configs/attack.py'], {},
                         ['config.source.workdir', 'config.source.torch_checkpoint']),
    'attack_source_missing': (['--config=configs/attack.py',
                               f'--config.source.workdir={NO_RUN}'], {}, [NO_RUN, 'not exist']),
    'attack_variant': (['--config=configs/attack.py:imprted'], {},
                       ["'imprted'", 'trained', 'rank', 'imported']),
    'study_seeds': (['--config=configs/study.py', '--config.study.seeds=0'], {},
                    ['config.study.seeds=0', '>= 1']),
    'study_probe_heads': (['--config=configs/study.py', "--config.study.probe_heads=('',)"], {},
                          ["config.study.probe_heads=''", "('gapnet', 'permutenet', 'linear')"]),
    'reproduce_variant': (['--config=configs/reproduce.py:huge'], {},
                          ["'huge'", 'micro', 'quick', 'paper']),
    'reproduce_suite': (['--config=configs/reproduce.py', '--config.suite=huge'], {},
                        ['config.suite', "'huge'", 'micro', 'quick', 'paper']),
    'reproduce_study_heads': (['--config=configs/reproduce.py:micro',
                               "--config.location.study.heads=('gapnet',)"], {},
                              ["config.location.study.heads=('gapnet',) lacks ['permutenet']"]),
    'segment_study_table_count': (['--config=configs/segmentation_study.py',
                                   '--config.study.table_count=7'], {},
                                  ['config.study.table_count=7', 'config.attack.attack.counts']),
    # Workdirs (made by the fixture, `_make_workdir`): each refused before any work.
    'workdir_of_another_run': (['--config=configs/micro.py'], {},
                               ['Bad workdir:', 'holds a run with another config',
                                'model.width: 8 -> 4', 'train.learning_rate: 0.05 -> 0.001',
                                '--restart']),
    'workdir_is_a_file': (['--config=configs/micro.py'], {}, ['Bad workdir:', 'is a file']),
    'workdir_empty': (['--config=configs/micro.py', None, '--workdir='], {},
                      ["--workdir=''", 'names no directory']),
    # A run whose checkpoints/ is empty (made by the fixture): a fault met at run time.
    'extra_argument': (['--config=configs/micro.py', 'extra'], {},
                       ["unexpected arguments ['extra']"]),
    'augshift_variant': (['--config=configs/augshift.py:nosuch'], {},
                         ["variant 'nosuch'", "'train', 'invariance'"]),
    'study_probe_layer': (['--config=configs/study.py', '--config.study.probe_layers=(7,)'], {},
                          ['config.study.probe_layers=7', '(1, 2, 3, 4, 5)']),
    'config_syntax_error': (['--config={root}/syntax_error.py'], {},
                            ['--config: SyntaxError', 'syntax_error.py', 'line 1']),
    'probe_of_a_run_without_checkpoints': (
        ['--config=configs/permutation_probe.py', '--config.probe.source_workdir={root}/empty_run',
         '--config.probe.layer=4'],
        {}, ['Failed: FileNotFoundError', 'empty_run', '--traceback']),
    'attack_of_a_classifier_run': (['--config=configs/attack.py',
                                    '--config.source.workdir={root}/empty_run'], {},
                                   ['config.source.workdir', "holds a 'train' run", 'segment']),
}

# The exact line each must print (the last one named every override, not the bad one).
EXACT = {
    'unknown_field_among_overrides': (
        ['--config=configs/micro.py', '--config.train.steps=3', '--config.model.paddin=zero',
         '--config.train.batch_size=8'],
        "Bad flag: unknown config field in --config.model.paddin ('paddin': did you mean "
        "'padding'?)"),
    'unknown_data_name': (
        ['--config=configs/micro.py', '--config.data.name=nosuchset'],
        "Bad config: config.data.name='nosuchset' is not allowed; choose a built-in set "
        "('gpjax_photos', 'gpjax_digits') or a tensorflow-datasets builder."),
    'missing_config_file': (
        ['--config=configs/nosuch.py'],
        "Bad flag: --config=configs/nosuch.py: no such file 'configs/nosuch.py'; give a config "
        'file, e.g. --config=configs/location.py.'),
    'not_a_torch_checkpoint': (
        ['--config=configs/attack.py:imported',
         f'--config.source.torch_checkpoint={NOT_A_CHECKPOINT}'],
        f"Bad config: config.source.torch_checkpoint='{NOT_A_CHECKPOINT}' is not a PyTorch "
        'checkpoint: torch.save writes a zip archive (or a pickle), and this file is neither.'),
}


# A known tfds set missing from the data dir: a message saying how to prepare it.
NOT_PREPARED = ['--config=configs/micro.py', '--config.data.name=cifar10']


def _make_workdir(workdir):
  """The workdirs of the 'workdir_*' cases."""
  if workdir.name == 'workdir_of_another_run':  # A run of micro.py at width 8, lr 0.05.
    config = micro.get_config()
    config.model.width, config.train.learning_rate = 8, 0.05
    workdir.mkdir()
    (workdir / 'config.json').write_text(json.dumps(config.to_dict()))
    (workdir / 'metrics.jsonl').write_text('')
  elif workdir.name == 'workdir_is_a_file':
    workdir.write_text('')


# One Python imports gpjax.main once and forks a child per case, which runs the command line
# as `python -m gpjax.main` does (the exit message on stderr, its code) without paying the
# ~3 s import again. The EXACT and not-prepared cases are full `python -m gpjax.main` processes,
# so that what a fresh interpreter prints (warnings at import) is held to one line too.
FORKED = r"""
import json, os, sys, traceback
from absl import app
from gpjax import cli, main

cases, out_dir = json.load(open(sys.argv[1])), sys.argv[2]
children = []
for name, (argv, env) in cases.items():
  pid = os.fork()
  if pid:
    children.append(pid)
    continue
  os.environ.update(env)
  for fd, suffix in ((1, 'out'), (2, 'err')):
    os.dup2(os.open(f'{out_dir}/{name}.{suffix}', os.O_WRONLY | os.O_CREAT), fd)
  sys.argv = ['gpjax.main', *argv]
  try:
    app.run(main.main, flags_parser=cli.parse_flags)
    code = 0
  except SystemExit as e:  # What the interpreter does with it at exit.
    code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    if isinstance(e.code, str):
      print(e.code, file=sys.stderr)
  except BaseException:
    traceback.print_exc()
    code = 1
  sys.stdout.flush()
  sys.stderr.flush()
  with open(f'{out_dir}/{name}.code', 'w') as f:
    f.write(str(code))
  os._exit(code)
for pid in children:
  os.waitpid(pid, 0)
"""


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory):
  """Runs every case; {name: (code, out, err)}."""
  root = tmp_path_factory.mktemp('cli')
  (root / 'syntax_error.py').write_text('def get_config(:\n')
  (root / 'empty_run' / 'checkpoints').mkdir(parents=True)
  (root / 'empty_run' / 'config.json').write_text(json.dumps(micro.get_config().to_dict()))
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  processes = {n: (args, {}) for n, (args, _) in EXACT.items()}
  processes['not_prepared'] = (NOT_PREPARED, {})
  cases = {**{n: (args, extra) for n, (args, extra, _) in CASES.items()}, **processes}
  argvs = {}
  for name, (args, extra_env) in cases.items():
    workdir = [] if None in args else [f'--workdir={root / name}']
    _make_workdir(root / name)
    # A data dir that does not exist: every case must stop before reading data.
    argv = [a.replace('{root}', str(root)) for a in args if a] + workdir
    if args[0].split('/')[-1].split(':')[0] in TRAINING_CONFIGS:
      argv.append(f'--config.data.data_dir={root / "no_data"}')
    argvs[name] = (argv, extra_env)
  out_dir = root / 'forked'
  out_dir.mkdir()
  forked = {n: argvs[n] for n in CASES}
  (root / 'cases.json').write_text(json.dumps(forked))
  running = {name: subprocess.Popen([sys.executable, '-m', 'gpjax.main', *argvs[name][0]],
                                    cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name in processes}
  subprocess.run([sys.executable, '-c', FORKED, str(root / 'cases.json'), str(out_dir)],
                 cwd=REPO, env=env, check=True, timeout=240)
  results = {name: (int((out_dir / f'{name}.code').read_text()),
                    (out_dir / f'{name}.out').read_text(), (out_dir / f'{name}.err').read_text())
             for name in forked}
  for name, p in running.items():
    out, err = p.communicate(timeout=240)
    results[name] = (p.returncode, out, err)
  assert not os.path.exists(root / 'no_data')
  made = sorted(n for n in cases if os.path.exists(root / n) and not n.startswith('workdir_'))
  # The rest stop before the workdir is made; these after it holds its config.json alone
  # (checks that need the devices or the data), which a corrected rerun may reuse.
  assert made == ['batch_not_divisible', 'not_prepared', 'probe_of_a_run_without_checkpoints',
                  'unknown_data_name'], made
  return results


def _one_line(outcome):
  code, out, err = outcome
  assert code not in (0, None) and code > 0, (code, err)
  assert 'Traceback' not in err, err
  lines = err.strip().splitlines()
  assert len(lines) == 1, err  # One line: no traceback, no logs.
  assert not out.strip(), out
  return lines[0]


@pytest.mark.parametrize('name', list(CASES))
def test_bad_command_line_gives_one_clear_line(outcomes, name):
  line = _one_line(outcomes[name])
  assert line.startswith(('Bad flag: ', 'Bad config: ', 'Bad workdir: ', 'Failed: ')), line
  for word in CASES[name][2]:
    assert word in line, (word, line)


@pytest.mark.parametrize('name', list(EXACT))
def test_former_tracebacks_give_their_line(outcomes, name):
  assert _one_line(outcomes[name]) == EXACT[name][1]


def test_unprepared_data_set_says_how_to_prepare(outcomes):
  code, out, err = outcomes['not_prepared']
  assert code == 1 and 'Traceback' not in err, err
  assert "Data not prepared: Data set 'cifar10' is not prepared" in err, err
  assert 'tfds build cifar10 --data_dir=' in err, err
  assert len(err.strip().splitlines()) == 1, err
