r"""Tries every bad input and fault below against the command line; writes docs/reliability.md.

  python docs/reliability/run.py            # from the repo root, with gpjax's Python
  GPJAX_PYTHON=.venv/bin/python python3 docs/reliability/run.py

Sets up what the cases need in a temporary folder (a 2-step micro run on the built-in data,
broken copies of it, unsafe and mismatched .pth files, broken config files), runs the cases a
few at a time with a per-case timeout, and writes one table row per case: what was tried,
the command ($T = the temporary folder), the exit code, what stderr ends with and a verdict:
'one line' (exit != 0, no traceback, one line with a known prefix), 'traceback', 'accepted'
(exit 0), 'timeout', or 'other' (exit != 0 without such a line). Standard library only; the
jobs run under GPJAX_PYTHON (default: this Python).
"""

import concurrent.futures
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = os.environ.get('GPJAX_PYTHON', sys.executable)
OUT = os.path.join(REPO, 'docs', 'reliability.md')
TIMEOUT = int(os.environ.get('GPJAX_CASE_TIMEOUT', '300'))  # Seconds per command.
WORKERS = int(os.environ.get('GPJAX_WORKERS', '3'))  # Cases at once (scenarios run 2 jobs).
PREFIXES = ('Bad flag: ', 'Bad config: ', 'Bad workdir: ', 'Data not prepared: ', 'Stopped: ',
            'Failed: ', 'Not overwritten: ', 'FATAL Flags parsing error')
MEMORY = 16 << 30  # Address-space limit of each command (ulimit -v): a huge batch or canvas
# fails to allocate instead of taking the machine's memory.
KINDS = ('config mistakes', 'command-line mistakes', 'workdir problems', 'data problems',
         'PyTorch files', 'probes/attacks pointed at the wrong thing', 'faults during a run')

MICRO = ['--config=configs/micro.py', '--config.data.data_dir={T}/tfds']
# The trained run every case copies or points to: 2 steps, width 4, a checkpoint per step.
TRAIN = MICRO + ['--config.train.steps=2', '--config.model.width=4',
                 '--config.train.checkpoint_every=1']
LONG = MICRO + ['--config.train.steps=400', '--config.model.width=4',
                '--config.train.checkpoint_every=1', '--config.train.eval_every=400']
LOC = ['--config=configs/location.py', '--config.data.data_dir={T}/tfds']
SEG = ['--config=configs/segmentation.py:tiny', '--config.data.data_dir={T}/tfds']
PROBE = ['--config=configs/permutation_probe.py']
INV = ['--config=configs/augshift.py:invariance']
AUG = ['--config=configs/augshift.py', '--config.data.data_dir={T}/tfds', '--config.train.steps=2']
ATTACK = ['--config=configs/attack.py']
STUDY = ['--config=configs/study.py', '--config.base.data.data_dir={T}/tfds']
REPRO = ['--config=configs/reproduce.py:micro', '--config.data_dir={T}/tfds']


def bench(name):
  return ['-m', 'gpjax.bench', f'--config=configs/bench/{name}.py']


# (kind, what was tried, argv after `python`; '-m gpjax.main' when it starts with a flag,
# workdir: None = a fresh $T/w/<n>, '' = no --workdir flag, else a path under {T}).
CONFIG = 'config mistakes'
CLI = 'command-line mistakes'
WORKDIR = 'workdir problems'
DATA = 'data problems'
TORCH = 'PyTorch files'
POINTED = 'probes/attacks pointed at the wrong thing'
FAULT = 'faults during a run'

CASES = [
    # micro.py: each field's wrong type or value.
    (CONFIG, 'learning_rate nan', MICRO + ['--config.train.learning_rate=nan'], None),
    (CONFIG, 'learning_rate inf', MICRO + ['--config.train.learning_rate=inf'], None),
    (CONFIG, 'learning_rate 0', MICRO + ['--config.train.learning_rate=0',
                                         '--config.train.steps=2'], None),
    (CONFIG, 'learning_rate -1', MICRO + ['--config.train.learning_rate=-1'], None),
    (CONFIG, 'learning_rate not a number', MICRO + ['--config.train.learning_rate=fast'], None),
    (CONFIG, 'steps negative', MICRO + ['--config.train.steps=-3'], None),
    (CONFIG, 'steps and epochs 0', MICRO + ['--config.train.steps=0',
                                            '--config.train.epochs=0'], None),
    (CONFIG, 'epochs negative', MICRO + ['--config.train.steps=0',
                                         '--config.train.epochs=-1'], None),
    (CONFIG, 'batch_size 0', MICRO + ['--config.train.batch_size=0'], None),
    (CONFIG, 'batch_size 1e8 (float text)', MICRO + ['--config.train.batch_size=1e8'], None),
    (CONFIG, 'batch_size 100000000', MICRO + ['--config.train.batch_size=100000000'], None),
    (CONFIG, 'eval batch_size 0', MICRO + ['--config.eval.batch_size=0'], None),
    (CONFIG, 'model.width 0', MICRO + ['--config.model.width=0'], None),
    (CONFIG, 'model.width -4', MICRO + ['--config.model.width=-4'], None),
    (CONFIG, 'model.width not an int', MICRO + ['--config.model.width=wide'], None),
    (CONFIG, 'model.width float', MICRO + ['--config.model.width=4.5'], None),
    (CONFIG, 'unknown padding', MICRO + ['--config.model.padding=foo'], None),
    (CONFIG, 'unknown head', MICRO + ['--config.model.head=maxpool'], None),
    (CONFIG, 'unknown backbone', MICRO + ['--config.model.backbone=resnet7'], None),
    (CONFIG, 'unknown stem', MICRO + ['--config.model.stem=big'], None),
    (CONFIG, 'unknown dtype', MICRO + ['--config.model.dtype=float16'], None),
    (CONFIG, 'unknown init', MICRO + ['--config.model.init=kaiming'], None),
    (CONFIG, 'unknown optimizer', MICRO + ['--config.train.optimizer=rmsprop'], None),
    (CONFIG, 'b1 above 1', MICRO + ['--config.train.b1=1.5'], None),
    (CONFIG, 'weight_decay negative', MICRO + ['--config.train.weight_decay=-1'], None),
    (CONFIG, 'log_every 0', MICRO + ['--config.train.log_every=0'], None),
    (CONFIG, 'keep_checkpoints 0', MICRO + ['--config.train.keep_checkpoints=0'], None),
    (CONFIG, 'eval_at not a tuple of ints', MICRO + ['--config.train.eval_at=(a,)'], None),
    (CONFIG, 'eval_at negative step', MICRO + ['--config.train.eval_at=(-5,)'], None),
    (CONFIG, 'unknown task', MICRO + ['--config.task=color'], None),
    (CONFIG, 'unknown job', MICRO + ['--config.job=nojob'], None),
    (CONFIG, 'unknown background', MICRO + ['--config.data.background=pink'], None),
    (CONFIG, 'flip not a bool', MICRO + ['--config.data.flip=maybe'], None),
    (CONFIG, 'permute_layer 0', MICRO + ['--config.model.head=permutenet',
                                         '--config.model.permute_layer=0'], None),
    (CONFIG, 'eval.orderings 0 (PermuteNet)', MICRO + ['--config.model.head=permutenet',
                                                       '--config.eval.orderings=0'], None),
    (CONFIG, 'eval.orderings 7 > 1! (width 1, permute_layer 1)',
     MICRO + ['--config.model.head=permutenet', '--config.model.permute_layer=1',
              '--config.model.width=1', '--config.eval.orderings=7'], None),
    (CONFIG, 'eval.orderings 7 > 2! (width 2, permute_layer 1)',
     MICRO + ['--config.model.head=permutenet', '--config.model.permute_layer=1',
              '--config.model.width=2', '--config.eval.orderings=7'], None),
    (CONFIG, 'eval.orderings 7 > 3! (width 3, permute_layer 1)',
     MICRO + ['--config.model.head=permutenet', '--config.model.permute_layer=1',
              '--config.model.width=3', '--config.eval.orderings=7'], None),
    (CONFIG, 'augshift on the location task', MICRO + ['--config.augshift.enabled=True'], None),
    (CONFIG, 'unknown micro variant', ['--config=configs/micro.py:nosuchtask'], None),
    # location.py
    (CONFIG, 'location data.grid 1', LOC + ['--config.data.grid=1'], None),
    (CONFIG, 'location data.grid 0', LOC + ['--config.data.grid=0'], None),
    (CONFIG, 'location data.grid 1000', LOC + ['--config.data.grid=1000',
                                               '--config.train.steps=2'], None),
    (CONFIG, 'location image_size 1', LOC + ['--config.data.image_size=1',
                                             '--config.train.steps=2'], None),
    (CONFIG, 'location image_size -8', LOC + ['--config.data.image_size=-8'], None),
    (CONFIG, 'location unknown variant', ['--config=configs/location.py:nosuch'], None),
    (CONFIG, 'location permute_layer 6', LOC + ['--config.model.head=permutenet',
                                                '--config.model.permute_layer=6'], None),
    (CONFIG, 'location ordering_chunk 0', LOC + ['--config.model.head=permutenet',
                                                 '--config.eval.ordering_chunk=0'], None),
    # permutation_probe.py
    (CONFIG, 'probe without source_workdir', PROBE, None),
    (CONFIG, 'probe layer 9', PROBE + ['--config.probe.layer=9'], None),
    (CONFIG, 'probe num_orderings 0', PROBE + ['--config.probe.num_orderings=0'], None),
    (CONFIG, 'probe batch_size -1', PROBE + ['--config.probe.batch_size=-1'], None),
    (CONFIG, 'probe dtype float16', PROBE + ['--config.probe.dtype=float16'], None),
    # augshift.py:invariance
    (CONFIG, 'invariance without source_workdir', INV, None),
    (CONFIG, 'invariance num_pairs 0', INV + ['--config.invariance.num_pairs=0'], None),
    (CONFIG, 'invariance readout_c -1', INV + ['--config.invariance.readout_c=-1'], None),
    (CONFIG, 'augshift unknown variant', ['--config=configs/augshift.py:nosuch'] + AUG[1:],
     None),
    (CONFIG, 'augshift weight nan', AUG + ['--config.augshift.weight=nan'], None),
    (CONFIG, 'augshift copies 3', AUG + ['--config.augshift.copies=3'], None),
    (CONFIG, 'augshift unknown placement', AUG + ['--config.augshift.placement=diagonal'], None),
    # attack.py
    (CONFIG, 'attack without a source', ATTACK, None),
    (CONFIG, 'attack unknown variant', ['--config=configs/attack.py:imprted'], None),
    (CONFIG, 'attack random_draws -1', ATTACK + ['--config.source.workdir={T}/trained',
                                                 '--config.attack.random_draws=-1'], None),
    (CONFIG, 'attack counts not ints', ATTACK + ['--config.source.workdir={T}/trained',
                                                 '--config.attack.counts=(a,)'], None),
    (CONFIG, 'attack mask_chunk 0', ATTACK + ['--config.source.workdir={T}/trained',
                                              '--config.probe.mask_chunk=0'], None),
    # segmentation.py
    (CONFIG, 'segmentation unknown backbone', SEG + ['--config.model.backbone=resnet7'], None),
    (CONFIG, 'segmentation dropout 1.5', SEG + ['--config.model.dropout=1.5'], None),
    (CONFIG, 'segmentation unknown schedule', SEG + ['--config.train.schedule=cosine'], None),
    (CONFIG, 'segmentation aspp_features 0', SEG + ['--config.model.aspp_features=0'], None),
    (CONFIG, 'segmentation color_jitter -1', SEG + ['--config.data.color_jitter=-1'], None),
    (CONFIG, 'segmentation unknown size', ['--config=configs/segmentation.py:huge'], None),
    # study.py, reproduce.py:micro
    (CONFIG, 'study seeds 0', STUDY + ['--config.study.seeds=0'], None),
    (CONFIG, 'study unknown padding', STUDY + ['--config.study.paddings=(foo,)'], None),
    (CONFIG, 'study probe layer 7', STUDY + ['--config.study.probe_layers=(7,)'], None),
    (CONFIG, 'study unknown train_seeds', STUDY + ['--config.study.train_seeds=fast'], None),
    (CONFIG, 'study unknown size', ['--config=configs/study.py:huge'], None),
    (CONFIG, 'reproduce unknown suite variant', ['--config=configs/reproduce.py:huge'], None),
    (CONFIG, 'reproduce suite field unknown', REPRO + ['--config.suite=huge'], None),
    (CONFIG, 'reproduce claims.grid 0', REPRO + ['--config.claims.grid=0'], None),
    (CONFIG, 'reproduce location seeds 0', REPRO + ['--config.location.study.seeds=0'], None),
    # configs/bench/*.py
    (CONFIG, 'bench train width 0', bench('train') + ['--config.width=0'], None),
    (CONFIG, 'bench train batch 0', bench('train') + ['--config.batch=0'], None),
    (CONFIG, 'bench train unknown dtype', bench('train') + ["--config.dtype=('float16',)"], None),
    (CONFIG, 'bench eval unknown head', bench('eval') + ['--config.head=maxpool'], None),
    (CONFIG, 'bench canvas grid 0', bench('canvas') + ['--config.grid=0'], None),
    (CONFIG, 'bench probe layer 9', bench('probe') + ['--config.layer=9'], None),
    (CONFIG, 'bench probe width 0', bench('probe') + ['--config.width=0'], None),
    (CONFIG, 'bench seeds 1', bench('seeds') + ['--config.seeds=1'], None),
    (CONFIG, 'bench seeds unknown mode', bench('seeds') + ["--config.modes=('fast',)"], None),
    (CONFIG, 'bench xla rounds 0', bench('xla') + ['--config.rounds=0'], None),
    (CONFIG, 'bench unknown field', bench('train') + ['--config.widht=8'], None),
    # Command-line mistakes.
    (CLI, 'no --config', [], None),
    (CLI, 'config file does not exist', ['--config=configs/nosuch.py'], None),
    (CLI, 'config file with a syntax error', ['--config={T}/syntax_error.py'], None),
    (CLI, 'config file without get_config', ['--config={T}/no_get_config.py'], None),
    (CLI, 'config file whose get_config raises', ['--config={T}/raises.py'], None),
    (CLI, 'no --workdir', MICRO, ''),
    (CLI, 'typo in a field name', MICRO + ['--config.model.paddin=zero'], None),
    (CLI, 'unknown field in a long override list',
     MICRO + ['--config.model.width=4', '--config.train.steps=2', '--config.model.padding=zero',
              '--config.train.batch_size=16', '--config.train.lr=0.1',
              '--config.eval.batch_size=1000', '--config.data.grid=2'], None),
    (CLI, 'unknown section', MICRO + ['--config.optim.lr=0.1'], None),
    (CLI, 'unknown flag', MICRO + ['--wrkdir=x'], None),
    (CLI, 'stray argument', MICRO + ['extra'], None),
    (CLI, 'override without a value', MICRO + ['--config.model.width'], None),
    (CLI, 'bench without --workdir', bench('train'), ''),
    (CLI, 'bench config file does not exist', ['-m', 'gpjax.bench',
                                              '--config=configs/bench/nosuch.py'], None),
    # Workdir problems.
    (WORKDIR, "workdir ''", MICRO + ['--workdir='], ''),
    (WORKDIR, 'workdir is a file', TRAIN, '{T}/a_file'),
    (WORKDIR, 'workdir under a file', TRAIN, '{T}/a_file/run'),
    (WORKDIR, 'read-only workdir (chmod 555)', TRAIN, '{T}/read_only'),
    (WORKDIR, 'changed model.width in an existing run',
     MICRO + ['--config.train.steps=2', '--config.model.width=8',
              '--config.train.checkpoint_every=1'], '{T}/copy_width'),
    (WORKDIR, 'changed learning_rate and steps in an existing run',
     MICRO + ['--config.train.steps=3', '--config.model.width=4',
              '--config.train.checkpoint_every=1', '--config.train.learning_rate=0.01'],
     '{T}/copy_lr'),
    (WORKDIR, 'corrupt config.json in the workdir', TRAIN, '{T}/bad_config_json'),
    (WORKDIR, 'config.json holding a list', TRAIN, '{T}/list_config_json'),
    (WORKDIR, 'corrupt metrics.jsonl on resume', TRAIN[:-3] + [
        '--config.train.steps=3', '--config.model.width=4', '--config.train.checkpoint_every=1'],
     '{T}/bad_metrics'),
    (WORKDIR, 'corrupt timing.json of a reproduce suite', REPRO, '{T}/suite_timing'),
    (WORKDIR, 'corrupt study results.json of a reproduce suite', REPRO, '{T}/suite_results'),
    (WORKDIR, 'bench record already in the workdir', bench('canvas') + [
        '--config.batch=(8,)', '--config.steps=1', '--config.warmup=0'], '{T}/bench_done'),
    # Data problems.
    (DATA, 'data set not prepared (cifar10)', MICRO + ['--config.data.name=cifar10'], None),
    (DATA, 'unknown data set', MICRO + ['--config.data.name=nosuchset'], None),
    (DATA, 'data_dir is a file', ['--config=configs/micro.py', '--config.data.data_dir={T}/a_file',
                                  '--config.train.steps=2'], None),
    (DATA, 'corrupt mean/std cache in the data dir', [
        '--config=configs/micro.py', '--config.data.data_dir={T}/tfds_bad_cache',
        '--config.train.steps=2', '--config.model.width=4'], None),
    (DATA, 'segmentation set not prepared (cityscapes)', SEG + ['--config.data.name=cityscapes'],
     None),
    # PyTorch files.
    (TORCH, 'unsafe .pth (pickled code) as location source', [
        '--config=configs/location.py:imported', '--config.data.data_dir={T}/tfds',
        '--config.source.torch_checkpoint={T}/unsafe.pth'], None),
    (TORCH, 'unsafe .pth (pickled code) as attack source', [
        '--config=configs/attack.py:imported', '--config.source.torch_checkpoint={T}/unsafe.pth'],
     None),
    (TORCH, 'unsafe .pth as pretrained backbone', [
        '--config=configs/segmentation.py:gpu', '--config.data.data_dir={T}/tfds',
        '--config.model.pretrained_backbone={T}/unsafe.pth'], None),
    (TORCH, '.pth with wrong keys', [
        '--config=configs/location.py:imported', '--config.data.data_dir={T}/tfds',
        '--config.source.torch_checkpoint={T}/wrong_keys.pth'], None),
    (TORCH, '.pth with a wrong shape', [
        '--config=configs/location.py:imported', '--config.data.data_dir={T}/tfds',
        '--config.source.torch_checkpoint={T}/wrong_shape.pth'], None),
    (TORCH, '.pth with wrong keys as attack source', [
        '--config=configs/attack.py:imported', '--config.source.torch_checkpoint={T}/wrong_keys.pth'],
     None),
    (TORCH, 'not a .pth (a text file)', [
        '--config=configs/location.py:imported', '--config.source.torch_checkpoint=README.md'],
     None),
    (TORCH, 'empty .pth', ['--config=configs/location.py:imported',
                           '--config.source.torch_checkpoint={T}/empty.pth'], None),
    (TORCH, '.pth that does not exist', ['--config=configs/location.py:imported',
                                         '--config.source.torch_checkpoint={T}/nosuch.pth'], None),
    # Probes and attacks pointed at the wrong thing.
    (POINTED, 'probe source does not exist', PROBE + ['--config.probe.source_workdir={T}/nosuch'],
     None),
    (POINTED, 'probe of a run with no checkpoint', PROBE + [
        '--config.probe.source_workdir={T}/empty_run', '--config.probe.layer=4'], None),
    (POINTED, 'probe whose newest checkpoint is truncated', PROBE + [
        '--config.probe.source_workdir={T}/truncated', '--config.probe.layer=4'], None),
    (POINTED, 'probe of a run with a corrupt config.json', PROBE + [
        '--config.probe.source_workdir={T}/src_bad_config', '--config.probe.layer=4'], None),
    (POINTED, 'probe of a run with a corrupt results.json', PROBE + [
        '--config.probe.source_workdir={T}/src_bad_results', '--config.probe.layer=4'], None),
    (POINTED, 'probe source is a file', PROBE + ['--config.probe.source_workdir={T}/a_file'],
     None),
    (POINTED, 'probe layer 5 of a GAPNet (no Dense head)', PROBE + [
        '--config.probe.source_workdir={T}/trained'], None),
    (POINTED, 'probe source_step that was never saved', PROBE + [
        '--config.probe.source_workdir={T}/trained', '--config.probe.layer=4'], None),
    (POINTED, 'attack pointed at a classifier run', ATTACK + [
        '--config.source.workdir={T}/trained'], None),
    (POINTED, 'attack pointed at a run with no checkpoint', ATTACK + [
        '--config.source.workdir={T}/empty_run'], None),
    (POINTED, 'attack pointed at a missing dir', ATTACK + ['--config.source.workdir={T}/nosuch'],
     None),
    (POINTED, 'rank pointed at a classifier run', ['--config=configs/attack.py:rank',
                                                   '--config.source.workdir={T}/trained'], None),
    (POINTED, 'attack ranking_file corrupt', ATTACK + [
        '--config.source.workdir={T}/trained', '--config.probe.ranking_file={T}/bad.json'], None),
    (POINTED, 'invariance of a location run', INV + [
        '--config.invariance.source_workdir={T}/trained'], None),
    (POINTED, 'invariance of a run with no checkpoint', INV + [
        '--config.invariance.source_workdir={T}/empty_run'], None),
    (POINTED, 'invariance of a missing dir', INV + ['--config.invariance.source_workdir={T}/nosuch'],
     None),
]
# The 'source_step never saved' probe case sets the step (the micro run saved 1 and 2).
CASES = [(k, w, a + (['--config.probe.source_step=7'] if 'never saved' in w else []), d)
         for k, w, a, d in CASES]


def _limit():
  resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def fill(arg, T):
  return arg.replace('{T}', T)


def shorten(text, T):
  text = text.replace(T, '$T').replace(REPO + '/', '').replace(PYTHON, 'python')
  text = re.sub(r'pid \d+ on host \S+ since [\d\- :]+', 'pid N on host H since TIME', text)
  text = re.sub(r'\.old-\d{8}-\d{6}', '.old-YYYYmmdd-HHMMSS', text)
  return text


def argv_of(args, workdir, T):
  head = [] if args and args[0] == '-m' else ['-m', 'gpjax.main']
  argv = [PYTHON] + head + [fill(a, T) for a in args]
  if workdir != '':
    argv.append(f'--workdir={fill(workdir, T)}')
  return argv


def run(argv, T, timeout=TIMEOUT):
  """(exit code or 'timeout', stdout, stderr) of ``argv``, niced, in the repo."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3')
  p = subprocess.Popen(['nice', '-n', '10'] + argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, start_new_session=True,
                       preexec_fn=_limit)
  try:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err
  except subprocess.TimeoutExpired:
    os.killpg(p.pid, signal.SIGKILL)
    out, err = p.communicate()
    return 'timeout', out, err


def lines_of(err):
  """stderr's lines without progress bars and blank lines."""
  lines = []
  for line in err.replace('\r', '\n').splitlines():
    line = line.strip()
    if line and not re.search(r'\d+it/s|it/s\]|s/it|\|\s*\d+/\d+|█|Generating splits|'
                              r'Shuffling|Dataset .* downloaded', line):
      lines.append(line)
  return lines


def verdict(code, err):
  if code == 'timeout':
    return 'timeout'
  if 'Traceback (most recent call last)' in err:
    return 'traceback'
  if code == 0:
    return 'accepted'
  lines = lines_of(err)
  return 'one line' if lines and lines[-1].startswith(PREFIXES) else 'other'


def shown(err, code):
  """What a user reads: the last line (and the first when a traceback precedes it)."""
  lines = lines_of(err)
  if not lines:
    return ''
  if 'Traceback (most recent call last)' in err and lines[0] != lines[-1]:
    return f'{lines[0]} ... {lines[-1]}'
  return lines[-1] if code != 0 else lines[-1][:200]


def row(kind, what, argv, code, out, err, T, note=''):
  cmd = ' '.join(a if ' ' not in a else repr(a) for a in argv[1:])
  return {'kind': kind, 'what': what, 'command': shorten('python ' + cmd, T),
          'code': code, 'stderr': shorten(shown(err, code), T), 'verdict': verdict(code, err),
          'note': shorten(note, T), 'lines': len(lines_of(err))}


# ---- Setup ---------------------------------------------------------------------------------

HELPER = r'''
import json, os, sys, torch
T = sys.argv[1]

class Payload:
  def __reduce__(self):
    return (os.system, (f'touch {T}/pwned',))

torch.save({'conv1.weight': torch.zeros(4, 3, 7, 7), 'x': Payload()}, f'{T}/unsafe.pth')
torch.save({'foo.weight': torch.zeros(3), 'bar': torch.ones(2)}, f'{T}/wrong_keys.pth')
from gpjax.bench import official_torch
state = official_torch.ResNet18Official('gapnet', 9, 4).state_dict()
state['layer1.0.conv2.weight'] = torch.zeros(4, 4, 5, 5)
torch.save(state, f'{T}/wrong_shape.pth')
from gpjax.data import builtin, segmentation
builtin.prepare('gpjax_digits', f'{T}/tfds')  # Built once here: cases read them at once.
segmentation._builder('gpjax_street', f'{T}/tfds')
from configs import reproduce
c = reproduce.get_config('micro')
c.data_dir = f'{T}/tfds'
for name in ('suite_timing', 'suite_results'):
  os.makedirs(f'{T}/{name}/location')
  json.dump(c.to_dict(), open(f'{T}/{name}/config.json', 'w'))
'''


def newest_step(run_dir):
  steps = [int(s) for s in os.listdir(os.path.join(run_dir, 'checkpoints')) if s.isdigit()]
  return max(steps) if steps else None


def setup(T):
  """The trained run and the broken things the cases point at; returns notes."""
  notes = []
  code, out, err = run(argv_of(TRAIN, '{T}/trained', T), T, timeout=900)
  if code != 0:
    sys.exit(f'setup: the trained run failed ({code}):\n{err[-3000:]}')
  code, out, err = run([PYTHON, '-c', HELPER, T], T)
  if code != 0:
    sys.exit(f'setup: the helper failed ({code}):\n{err[-3000:]}')
  open(os.path.join(T, 'a_file'), 'w').close()
  open(os.path.join(T, 'empty.pth'), 'w').close()
  with open(os.path.join(T, 'bad.json'), 'w') as f:
    f.write('{"ranking": [1, 2,')
  with open(os.path.join(T, 'syntax_error.py'), 'w') as f:
    f.write('import ml_collections\n\ndef get_config(:\n  return None\n')
  with open(os.path.join(T, 'no_get_config.py'), 'w') as f:
    f.write('X = 1\n')
  with open(os.path.join(T, 'raises.py'), 'w') as f:
    f.write('def get_config():\n  raise RuntimeError("no config today")\n')
  trained = os.path.join(T, 'trained')
  for name in ('copy_width', 'copy_lr', 'bad_config_json', 'list_config_json', 'bad_metrics',
               'truncated', 'src_bad_config', 'src_bad_results', 'restart', 'sigterm',
               'killed'):
    shutil.copytree(trained, os.path.join(T, name))
  for name in ('bad_config_json', 'src_bad_config'):
    with open(os.path.join(T, name, 'config.json'), 'w') as f:
      f.write('{"job": "train", "model": {')
  with open(os.path.join(T, 'list_config_json', 'config.json'), 'w') as f:
    f.write('[1, 2, 3]')
  with open(os.path.join(T, 'bad_metrics', 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 3, "split": \n')
  with open(os.path.join(T, 'src_bad_results', 'results.json'), 'w') as f:
    f.write('{"test_accuracy": ')
  step = newest_step(os.path.join(T, 'truncated'))
  cut = 0
  for root, _, files in os.walk(os.path.join(T, 'truncated', 'checkpoints', str(step))):
    for name in files:
      path = os.path.join(root, name)
      size = os.path.getsize(path)
      if size > 64:
        os.truncate(path, size // 2)
        cut += 1
  notes.append(f'truncated: halved {cut} files over 64 bytes in checkpoints/{step}')
  os.makedirs(os.path.join(T, 'empty_run', 'checkpoints'))
  shutil.copy(os.path.join(trained, 'config.json'), os.path.join(T, 'empty_run'))
  os.makedirs(os.path.join(T, 'read_only'))
  os.chmod(os.path.join(T, 'read_only'), 0o555)
  for name in ('suite_timing', 'suite_results'):
    path = 'timing.json' if name == 'suite_timing' else 'location/results.json'
    with open(os.path.join(T, name, path), 'w') as f:
      f.write('{"location": ')
  os.makedirs(os.path.join(T, 'bench_done'))
  with open(os.path.join(T, 'bench_done', 'canvas.json'), 'w') as f:
    f.write('{}')
  shutil.copytree(os.path.join(T, 'tfds'), os.path.join(T, 'tfds_bad_cache'))
  caches = [os.path.join(r, n) for r, _, fs in os.walk(os.path.join(T, 'tfds_bad_cache'))
            for n in fs if n.startswith('gpjax_mean_std')]
  for path in caches:
    with open(path, 'w') as f:
      f.write('{"mean": [0.5,')
  notes.append(f'tfds_bad_cache: {len(caches)} mean/std cache file(s) made corrupt')
  return notes


# ---- Scenarios: several commands in order ---------------------------------------------------

def wait_for(predicate, proc, limit=TIMEOUT):
  start = time.time()
  while time.time() - start < limit and proc.poll() is None:
    if predicate():
      return True
    time.sleep(1)
  return False


def start(argv):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.Popen(['nice', '-n', '10'] + argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True,
                       preexec_fn=_limit)


def finish(p, timeout=TIMEOUT):
  try:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err
  except subprocess.TimeoutExpired:
    os.killpg(p.pid, signal.SIGKILL)
    out, err = p.communicate()
    return 'timeout', out, err


def checkpoint_past(run_dir, step):
  def check():
    s = newest_step(run_dir) if os.path.isdir(os.path.join(run_dir, 'checkpoints')) else None
    return s is not None and s > step
  return check


def lock_then_kill(T):
  """Two processes on one workdir, then kill -9 of the holder and a rerun that resumes."""
  rows, wd = [], os.path.join(T, 'killed')
  first = argv_of(LONG, '{T}/killed', T)
  a = start(first)
  held = wait_for(checkpoint_past(wd, 5), a)
  b = argv_of(LONG, '{T}/killed', T)
  code, out, err = run(b, T)
  rows.append(row(FAULT, 'second process on a workdir in use', b, code, out, err, T,
                  '' if held else 'the first job had not reached step 6 in time'))
  step = newest_step(wd)
  if a.poll() is None:
    os.killpg(a.pid, signal.SIGKILL)
  a.communicate()
  code, out, err = run(first, T)
  resumed = re.search(r'[Rr]esum\w* .*', out + err)
  rows.append(row(FAULT, 'kill -9 mid-run, then the same command again', first, code, out, err,
                  T, f'killed with checkpoint {step} on disk; the rerun says: '
                  f'{resumed[0][:120] if resumed else "(no resume line)"}; newest checkpoint now '
                  f'{newest_step(wd)}'))
  return rows


def sigterm(T):
  wd = os.path.join(T, 'sigterm')
  argv = argv_of(LONG, '{T}/sigterm', T)
  p = start(argv)
  wait_for(checkpoint_past(wd, 2), p)
  before = newest_step(wd)
  if p.poll() is None:
    os.killpg(p.pid, signal.SIGTERM)
  code, out, err = finish(p)
  said = [l for l in out.splitlines() if 'SIGTERM' in l]
  return [row(FAULT, 'SIGTERM mid-run', argv, code, out, err, T,
              f'newest checkpoint {before} before, {newest_step(wd)} after; stdout: '
              f'{said[0] if said else "(nothing about SIGTERM)"}')]


def restart(T):
  wd = os.path.join(T, 'restart')
  before = sorted(os.path.relpath(os.path.join(r, n), wd) for r, _, fs in os.walk(wd)
                  for n in fs if n != '.lock')
  argv = argv_of(MICRO + ['--config.train.steps=1', '--config.model.width=8', '--restart'],
                 '{T}/restart', T)
  code, out, err = run(argv, T)
  olds = [d for d in os.listdir(T) if d.startswith('restart.old-')]
  kept = 'no old run found'
  if olds:
    old = os.path.join(T, olds[0])
    after = sorted(os.path.relpath(os.path.join(r, n), old) for r, _, fs in os.walk(old)
                   for n in fs if n != '.lock')
    kept = ('every file of the old run kept in restart.old-YYYYmmdd-HHMMSS' if after == before
            else f'old run changed: {len(before)} files before, {len(after)} after')
  moved = [l for l in out.splitlines() if 'old run' in l]
  return [row(WORKDIR, '--restart with another config (old run moved aside)', argv, code, out,
              err, T, f'{kept}; stdout: {moved[0] if moved else "(no line)"}')]


def nan_loss(T):
  argv = argv_of(MICRO + ['--config.train.steps=3', '--config.train.learning_rate=1e30',
                          '--config.model.width=4'], '{T}/w/diverged', T)
  code, out, err = run(argv, T)
  return [row(FAULT, 'training diverges (learning_rate 1e30)', argv, code, out, err, T)]


def read_only(T):
  """What a write to the chmod 555 dir does as this user (root ignores the bits)."""
  try:
    with open(os.path.join(T, 'read_only', '.probe'), 'w'):
      pass
    os.remove(os.path.join(T, 'read_only', '.probe'))
    return f'this user (uid {os.getuid()}) can write into a chmod 555 dir: the bits are ignored'
  except OSError as e:
    return f'a write into it fails here ({e.strerror})'


SCENARIOS = (lock_then_kill, sigterm, restart, nan_loss)


def guarded(scenario, T):
  """A scenario's rows, or one row saying how this script failed in it."""
  try:
    return scenario(T)
  except Exception as e:  # Reported in the table, not lost with the other rows.
    return [{'kind': FAULT, 'what': scenario.__name__, 'command': '(script)', 'code': '-',
             'stderr': f'{type(e).__name__}: {e}', 'verdict': 'other', 'note': 'script error',
             'lines': 1}]


# ---- Main ----------------------------------------------------------------------------------

def one_case(i, case, T):
  kind, what, args, workdir = case
  if workdir is None:
    workdir = f'{{T}}/w/{i:03d}'
  argv = argv_of(args, workdir, T)
  code, out, err = run(argv, T)
  note = ''
  if 'unsafe' in what:
    note = ('the payload RAN ($T/pwned exists)' if os.path.exists(os.path.join(T, 'pwned'))
            else 'the payload did not run')
  return row(kind, what, argv, code, out, err, T, note)


def table(rows):
  out = []
  for kind in KINDS:
    group = sorted((r for r in rows if r['kind'] == kind), key=lambda r: r['what'])
    if not group:
      continue
    out += [f'\n## {kind.capitalize()} ({len(group)})\n',
            '| What was tried | Command | Exit | stderr (what the user reads) | Verdict |',
            '|---|---|---|---|---|']
    for r in group:
      err = r['stderr'].replace('|', '\\|').replace('`', "'")
      cell = f'`{err}`' if err else '(nothing)'
      if r['lines'] > 1 and r['verdict'] != 'traceback':
        cell += f" ({r['lines']} lines; the last shown)"
      if r['note']:
        cell += f"<br>{r['note'].replace('|', '/')}"
      cmd = r['command'].replace('|', '\\|')
      out.append(f"| {r['what']} | `{cmd}` | {r['code']} | {cell} | {r['verdict']} |")
  return '\n'.join(out)


def main():
  commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, text=True,
                          capture_output=True).stdout.strip()
  started = time.time()
  T = tempfile.mkdtemp(prefix='gpjax_reliability_')
  os.makedirs(os.path.join(T, 'w'))
  print(f'setup in {T}', flush=True)
  notes = setup(T)
  notes.append(read_only(T))
  rows, lock = [], threading.Lock()
  with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
    futures = [pool.submit(guarded, s, T) for s in SCENARIOS]
    futures += [pool.submit(lambda i, c: [one_case(i, c, T)], i, c) for i, c in enumerate(CASES)]
    for f in concurrent.futures.as_completed(futures):
      with lock:
        rows += f.result()
        print(f'{len(rows)} done ({time.time() - started:.0f} s)', flush=True)
  if os.path.exists(os.path.join(T, 'pwned')):
    notes.append('an unsafe .pth payload ran during the cases ($T/pwned exists)')
  counts = {v: sum(r['verdict'] == v for r in rows)
            for v in ('one line', 'traceback', 'accepted', 'timeout', 'other')}
  text = [
      '# Reliability: every bad input and fault against the command line',
      '',
      f'Code at commit `{commit}`. Regenerate: `python docs/reliability/run.py` from the repo '
      'root (with gpjax\'s Python). Each row is one command run from the repo root on CPU; '
      '`$T` is the temporary folder the script sets up (a 2-step micro run, its broken '
      f'copies, .pth and config files); a {TIMEOUT} s limit and a {MEMORY >> 30} GiB '
      'address-space limit (ulimit -v) per command.',
      '',
      'Verdicts: **one line** (exit != 0, no traceback, the last stderr line starts with a '
      'known prefix such as `Bad config: `), **traceback**, **accepted** (exit 0), '
      '**timeout**, **other** (exit != 0 without such a line). Progress bars are left out of '
      'the stderr column; a traceback shows its first and last line.',
      '',
      f'{len(rows)} cases: ' + ', '.join(f'{n} {v}' for v, n in counts.items()) + '.',
      '',
      'Setup notes: ' + '; '.join(shorten(n, T) for n in notes) + '.',
      table(rows),
      '',
  ]
  with open(OUT, 'w') as f:
    f.write('\n'.join(text))
  with open(os.path.join(REPO, 'docs', 'reliability', 'rows.json'), 'w') as f:
    json.dump(sorted(rows, key=lambda r: (r['kind'], r['what'])), f, indent=1)
  print(f'wrote {OUT}: {counts} in {time.time() - started:.0f} s; temporary files in {T}')


if __name__ == '__main__':
  main()
