r"""The XLA-options benchmark: the training step under each of several ``XLA_FLAGS`` settings
against XLA's defaults measured in the same run, and against PyTorch's step.

  python -m gpjax.bench xla --width 8 --source-size 16 --batch 16,32,64
  python -m gpjax.bench xla --width 64 --source-size 32 --batch 16 --out docs/benchmarks/x.json

XLA reads ``XLA_FLAGS`` once, when its backend starts, so every setting runs `gpjax.bench`'s
``train`` benchmark (the real `classification.train_step`, float32, synthetic sources) in a
child process of its own. The settings take turns for ``--rounds`` rounds, so that a change
in the machine's load touches all of them alike; each setting's speed is the median over
rounds of the child's median step, its ratio is over the baseline's (the first setting, XLA's
defaults). The child's loss after the same steps from the same state and batch tells whether
a setting changes the numbers (``loss_change``). With torch installed, the same network's
step in PyTorch (`gpjax.bench.torch_reference`) at each batch, in one more child process.
Batch shapes are the ``--batch`` axis; the layout of convolutions is XLA's own choice on CPU
(the flags that hand convolutions to other libraries are among the settings).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from gpjax.bench import seeds, steps

# XLA's defaults first (the baseline), then one option each: convolutions and matmuls through
# XNNPACK or oneDNN, another scheduler, single-threaded Eigen, wider vectors, fast math.
SETTINGS = ('', '--xla_cpu_use_xnnpack=true', '--xla_cpu_use_onednn=true',
            '--xla_cpu_enable_concurrency_optimized_scheduler=true',
            '--xla_cpu_multi_thread_eigen=false', '--xla_cpu_prefer_vector_width=512',
            '--xla_cpu_enable_fast_math=true')


def add_xla(subparsers) -> None:
  p = subparsers.add_parser('xla', help='the train step under XLA_FLAGS settings vs the '
                            'defaults, and vs PyTorch')
  p.add_argument('--settings', type=lambda t: [s.strip() for s in t.split(';')],
                 default=list(SETTINGS),
                 help="';'-separated XLA_FLAGS values, the first the baseline ('' = defaults)")
  p.add_argument('--batch', type=steps._csv(int), default=[32], help='batches, comma separated')
  p.add_argument('--width', type=int, default=8, help='channels of stage 1 (CPU study: 8)')
  p.add_argument('--source-size', type=int, default=16,
                 help='side of the sources (CPU study: 16; canvases are grid times it)')
  p.add_argument('--grid', type=int, default=3)
  p.add_argument('--head', default='gapnet', choices=('gapnet', 'permutenet'))
  p.add_argument('--steps', type=int, default=20, help='timed steps (median)')
  p.add_argument('--warmup', type=int, default=3, help='untimed steps after compiling')
  p.add_argument('--rounds', type=int, default=2, help='turns of every setting')
  p.add_argument('--torch', default='auto', choices=('auto', 'off'),
                 help='auto: time the PyTorch step where torch is installed')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='', help='write the JSON record to this file')


def _child(args: argparse.Namespace, setting: str) -> dict[str, Any]:
  """The ``train`` benchmark's record under XLA_FLAGS ``setting``, or ``{'error': line}``."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'record.json')
    cmd = [sys.executable, '-m', 'gpjax.bench', 'train', '--batch',
           ','.join(map(str, args.batch)), '--dtype', 'float32', '--width', str(args.width),
           '--head', args.head, '--grid', str(args.grid), '--source-size', str(args.source_size),
           '--steps', str(args.steps), '--warmup', str(args.warmup), '--matmul-size', '0',
           '--seed', str(args.seed), '--out', out]
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {setting}".strip())
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
      return {'error': (done.stderr.strip().splitlines() or ['no output'])[-1]}
    with open(out) as f:
      return json.load(f)


def bench_xla(args: argparse.Namespace) -> dict[str, Any]:
  """Every setting's step per batch over ``--rounds`` turns, its ratio to the baseline, the
  change of the loss it gives, and the PyTorch step."""
  if args.rounds < 1 or args.steps < 1 or args.warmup < 0 or not args.batch:
    raise SystemExit('--rounds, --steps and --batch must be >= 1, --warmup >= 0.')
  if len(set(args.settings)) != len(args.settings):
    raise SystemExit(f'--settings repeats a setting: {args.settings}.')
  records = {s: [] for s in args.settings}
  for _ in range(args.rounds):
    for setting in args.settings:
      records[setting].append(_child(args, setting))
  rows = []
  for setting, runs in records.items():
    errors = [r['error'] for r in runs if 'error' in r]
    if errors:
      rows.append({'setting': setting, 'error': errors[0]})
      continue
    for i, b in enumerate(args.batch):
      per_round = [r['results'][i]['seconds_per_step'] for r in runs]
      rows.append({'setting': setting, 'batch': b,
                   'seconds_per_step': statistics.median(per_round),
                   'seconds_per_step_per_round': per_round,
                   'images_per_s': b / statistics.median(per_round),
                   'compile_seconds': runs[0]['results'][i]['compile_seconds'],
                   'final_loss': runs[0]['results'][i]['final_loss']})
  base = {r['batch']: r for r in rows if r['setting'] == args.settings[0] and 'batch' in r}
  for r in rows:
    if 'batch' in r and r['batch'] in base:
      r['speed_over_baseline'] = base[r['batch']]['seconds_per_step'] / r['seconds_per_step']
      r['loss_change'] = r['final_loss'] - base[r['batch']]['final_loss']
  side = args.grid * args.source_size
  record = {'settings': {**{k: v for k, v in vars(args).items() if k != 'command'},
                         'canvas_size': side, 'optimizer': 'adam', 'dtype': 'float32'},
            'results': rows}
  if args.torch == 'auto':
    record['torch'] = []
    for b in args.batch:
      torch = seeds._torch_step(argparse.Namespace(**{**vars(args), 'batch': b}), side)
      if 'seconds_per_step' in torch and b in base:
        torch['batch'] = b
        torch['gpjax_default_speed_over_torch'] = (torch['seconds_per_step']
                                                   / base[b]['seconds_per_step'])
        best = min((r for r in rows if r.get('batch') == b), key=lambda r: r['seconds_per_step'])
        torch['gpjax_best_setting'] = best['setting']
        torch['gpjax_best_speed_over_torch'] = torch['seconds_per_step'] / best['seconds_per_step']
      record['torch'].append(torch)
  return record


def print_xla(record: dict[str, Any]) -> None:
  s = record['settings']
  print(f"xla: width-{s['width']} resnet18 {s['head']}, {s['canvas_size']}x{s['canvas_size']} "
        f"canvases, float32, {s['rounds']} rounds; {record['device_kind']} "
        f"x{record['num_devices']}, jax {record['jax_version']}")
  print(f"{'XLA_FLAGS':<56} {'batch':>5} {'ms/step':>8} {'vs default':>10} {'loss change':>12}")
  for r in record['results']:
    name = r['setting'] or '(defaults)'
    if 'error' in r:
      print(f"{name:<56} failed: {r['error']}")
      continue
    print(f"{name:<56} {r['batch']:>5} {1e3 * r['seconds_per_step']:>8.1f} "
          f"{r.get('speed_over_baseline', float('nan')):>9.2f}x "
          f"{r.get('loss_change', float('nan')):>12.2e}")
  for t in record.get('torch', []):
    if 'gpjax_default_speed_over_torch' in t:
      print(f"PyTorch {t['torch_version']} ({t['threads']} threads), batch {t['batch']}: "
            f"{1e3 * t['seconds_per_step']:.1f} ms/step; gpjax at "
            f"{t['gpjax_default_speed_over_torch']:.2f}x its speed with XLA's defaults, "
            f"{t['gpjax_best_speed_over_torch']:.2f}x with {t['gpjax_best_setting'] or 'them'}")
    else:
      print(f"PyTorch step not measured: {t.get('error', 'no baseline')}")
