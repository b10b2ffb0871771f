r"""The seeds benchmark: R seeds of one config stepped in one program (`gpjax.core.multirun`) against
one after another, and the same network's training step in PyTorch.

  python -m gpjax.bench seeds --seeds 3 --width 8 --source-size 16 --batch 32
  python -m gpjax.bench seeds --cell-steps 400 --out docs/benchmarks/seeds_cpu.json

Per mode (``--modes``): seconds per group step (every run advanced one step: R calls of the
single-run step for 'sequential', one call of `multirun.group_step` otherwise) of the real
`classification.train_step` on synthetic uint8 sources on the device, medians after warm-up,
and its speed relative to sequential measured in the same run. ``--torch``: the same
ResNet-18 (official structure, `gpjax.bench.torch_reference`, in a child process so that
torch is never imported here) trained with the same Adam step on the same shapes, in float32
with as many threads as this machine has cores; the ratio is gpjax's single-run step speed
over PyTorch's. ``--cell-steps N``: a real study cell too (configs/study.py's CPU base, the
location task, GAPNet, zero padding, R seeds, N steps, the built-in digits), trained end to
end in each of ``--cell-modes`` (compiles, evaluations and checkpoints included), with its
wall time and whether every run's test accuracy and loss equal the sequential one's.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import jax

from configs import study as study_config
from gpjax.core import multirun
from gpjax.core import parallel
from gpjax.studies import grid as study
from gpjax.core import trainer
from gpjax.bench import steps
from gpjax.tasks import classification


def add_seeds(subparsers) -> None:
  p = subparsers.add_parser('seeds', help='seeds of one config in one program vs one after '
                            'another (gpjax.core.multirun), and the PyTorch step')
  p.add_argument('--seeds', type=int, default=3, help='R: runs stepped together')
  p.add_argument('--modes', type=steps._csv(str), default=['sequential', 'unroll', 'vmap', 'map'],
                 help='gpjax.core.multirun modes to time, comma separated (sequential first)')
  p.add_argument('--width', type=int, default=8, help='channels of stage 1 (CPU study: 8)')
  p.add_argument('--source-size', type=int, default=16,
                 help='side of the sources (CPU study: 16; canvases are grid times it)')
  p.add_argument('--grid', type=int, default=3)
  p.add_argument('--batch', type=int, default=32, help='batch of each run (CPU study: 32)')
  p.add_argument('--head', default='gapnet', choices=('gapnet', 'permutenet'))
  p.add_argument('--backbone', default='resnet18', choices=('resnet18',))
  p.add_argument('--steps', type=int, default=20, help='timed group steps (median)')
  p.add_argument('--warmup', type=int, default=3, help='untimed group steps after compiling')
  p.add_argument('--torch', default='auto', choices=('auto', 'off'),
                 help='auto: time the PyTorch step where torch is installed')
  p.add_argument('--cell-steps', type=int, default=0,
                 help='train a real study cell of this many steps in each --cell-modes (0 = no)')
  p.add_argument('--cell-modes', type=steps._csv(str), default=['sequential', 'unroll'])
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='', help='write the JSON record to this file')


def _check(args: argparse.Namespace) -> None:
  if args.seeds < 2 or args.steps < 1 or args.warmup < 0 or args.batch < 1:
    raise SystemExit('--seeds must be >= 2, --steps and --batch >= 1, --warmup >= 0.')
  for mode in args.modes + args.cell_modes:
    if mode not in multirun.MODES[1:]:
      raise SystemExit(f'mode {mode!r}: choose from {multirun.MODES[1:]}.')
  if args.modes[0] != 'sequential' or args.cell_modes[0] != 'sequential':
    raise SystemExit('--modes and --cell-modes start with sequential, the baseline.')
  if args.batch % jax.device_count():
    raise SystemExit(f'--batch {args.batch} must be divisible by the {jax.device_count()} '
                     'devices.')


def _group_times(args, mode, setup_step, model, tx, mesh, canvas_shape):
  """(compile seconds, per-group-step seconds) of one mode, fresh states for every run."""
  num = args.seeds
  states = [trainer.init_state(args.seed + r, model, tx, canvas_shape, mesh) for r in range(num)]
  hosts = [steps.host_sources(args.batch, args.seed + r, args.source_size) for r in range(num)]
  if mode == 'sequential':
    single = parallel.shard_step(setup_step, mesh, outputs=2, donate=True)
    batches = [parallel.to_global(mesh, h) for h in hosts]
    start = time.perf_counter()
    compiled = single.lower(states[0], batches[0]).compile()
    compile_s = time.perf_counter() - start

    def step():
      for r in range(num):
        states[r], metrics = compiled(states[r], batches[r])
      return states, metrics
  else:
    group = multirun.group_step(setup_step, mesh, mode, num)
    state = multirun.join_states(mode, states)
    batch = parallel.to_global(mesh, multirun.join_batches(mode, hosts),
                               multirun.batch_axis(mode))
    start = time.perf_counter()
    compiled = group.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    holder = [state]

    def step():
      holder[0], metrics = compiled(holder[0], batch)
      return holder[0], metrics
  seconds = []
  for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    jax.block_until_ready(step())
    if i >= args.warmup:
      seconds.append(time.perf_counter() - start)
  return compile_s, seconds


def _torch_step(args: argparse.Namespace, canvas_side: int) -> dict[str, Any]:
  """The PyTorch reference's record from a child process, or why there is none."""
  cmd = [sys.executable, '-m', 'gpjax.bench.torch_reference', '--width', str(args.width),
         '--batch', str(args.batch), '--size', str(canvas_side),
         '--classes', str(args.grid ** 2), '--steps', str(args.steps),
         '--warmup', str(args.warmup), '--threads', str(os.cpu_count())]
  done = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    return {'error': (done.stderr.strip().splitlines() or ['no output'])[-1]}
  return json.loads(done.stdout.strip().splitlines()[-1])


def _cell(args: argparse.Namespace) -> dict[str, Any]:
  """A real study cell of R seeds trained end to end in each of ``--cell-modes``."""
  base = study_config.get_config('cpu').base
  base.train.steps = base.train.eval_every = args.cell_steps
  base.train.eval_at = ''
  base.seed = args.seed
  configs = [config for _, config in study.grid(base, [('s{seed}', {})], args.seeds)]
  classification.load_data(base)  # Built on first use: outside every timed mode.
  rows = []
  for mode in args.cell_modes:
    with tempfile.TemporaryDirectory() as root:
      start = time.perf_counter()
      results = multirun.train_group(configs, [os.path.join(root, f's{r}')
                                               for r in range(args.seeds)], classification, mode)
      rows.append({'mode': mode, 'wall_seconds': time.perf_counter() - start,
                   'test_accuracies': [r['test_accuracy'] for r in results],
                   'test_losses': [r['test_loss'] for r in results]})
  for row in rows:
    row['speedup_vs_sequential'] = rows[0]['wall_seconds'] / row['wall_seconds']
    row['equal_to_sequential'] = all(row[k] == rows[0][k]
                                     for k in ('test_accuracies', 'test_losses'))
  return {'steps': args.cell_steps, 'task': base.task, 'head': base.model.head,
          'padding': base.model.padding, 'width': base.model.width,
          'batch': base.train.batch_size, 'data': base.data.name, 'results': rows}


def bench_seeds(args: argparse.Namespace) -> dict[str, Any]:
  """Times every mode's group step, then the PyTorch step and the real cell if asked."""
  _check(args)
  mesh = parallel.make_mesh()
  step_args = argparse.Namespace(seed=args.seed, grid=args.grid, backbone=args.backbone,
                                 head=args.head, width=args.width)
  config = steps._step_config(step_args, args.batch, 'float32')
  model = classification.create_model(config, args.grid ** 2)
  tx = trainer.create_optimizer(config.train, config.train.steps)
  info = steps._SyntheticInfo()
  train_step = lambda state, batch: classification.train_step(  # noqa: E731
      state, batch, model=model, tx=tx, config=config, info=info)
  side = args.grid * args.source_size
  rows = []
  for mode in args.modes:
    compile_s, seconds = _group_times(args, mode, train_step, model, tx, mesh, (side, side, 3))
    rows.append({'mode': mode, 'seconds_per_group_step': statistics.median(seconds),
                 'seconds_per_group_step_all': seconds, 'compile_seconds': compile_s,
                 'images_per_s': args.seeds * args.batch / statistics.median(seconds)})
  for row in rows:
    row['speedup_vs_sequential'] = (rows[0]['seconds_per_group_step']
                                    / row['seconds_per_group_step'])
  record = {'settings': {**{k: v for k, v in vars(args).items() if k != 'command'},
                         'canvas_size': side, 'optimizer': 'adam', 'dtype': 'float32',
                         'source': f'synthetic uint8 {args.source_size}x{args.source_size}x3'},
            'results': rows}
  if args.torch == 'auto':
    torch = _torch_step(args, side)
    if 'seconds_per_step' in torch:
      single = rows[0]['seconds_per_group_step'] / args.seeds
      torch['gpjax_seconds_per_step'] = single
      torch['gpjax_speed_over_torch'] = torch['seconds_per_step'] / single
    record['torch'] = torch
  if args.cell_steps:
    record['cell'] = _cell(args)
  return record


def print_seeds(record: dict[str, Any]) -> None:
  s = record['settings']
  print(f"seeds: {s['seeds']} runs of a width-{s['width']} {s['backbone']} {s['head']}, "
        f"{s['canvas_size']}x{s['canvas_size']} canvases, batch {s['batch']} each, float32; "
        f"{record['device_kind']} x{record['num_devices']}, jax {record['jax_version']}")
  print(f"{'mode':<11} {'ms/group step':>14} {'vs sequential':>14} {'images/s':>9} "
        f"{'compile s':>10}")
  for r in record['results']:
    print(f"{r['mode']:<11} {1e3 * r['seconds_per_group_step']:>14.1f} "
          f"{r['speedup_vs_sequential']:>13.2f}x {r['images_per_s']:>9.0f} "
          f"{r['compile_seconds']:>10.1f}")
  torch = record.get('torch')
  if torch and 'seconds_per_step' in torch:
    print(f"PyTorch {torch['torch_version']} ({torch['threads']} threads): "
          f"{1e3 * torch['seconds_per_step']:.1f} ms/step; gpjax one run "
          f"{1e3 * torch['gpjax_seconds_per_step']:.1f} ms/step: "
          f"{torch['gpjax_speed_over_torch']:.2f}x PyTorch's speed")
  elif torch:
    print(f"PyTorch step not measured: {torch['error']}")
  if 'cell' in record:
    c = record['cell']
    print(f"a real cell ({c['task']} {c['head']} {c['padding']}, {c['steps']} steps):")
    for r in c['results']:
      print(f"  {r['mode']:<11} {r['wall_seconds']:>7.1f} s  {r['speedup_vs_sequential']:.2f}x"
            f"  equal to sequential: {r['equal_to_sequential']}")
