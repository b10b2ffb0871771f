r"""The seeds benchmark: R seeds of one config stepped together (`gpjax.core.multirun`) against
one after another, and the same network's training step in PyTorch.

  python -m gpjax.bench --config=configs/bench/seeds.py --workdir=runs/bench/seeds
  python -m gpjax.bench --config=configs/bench/seeds.py --workdir=runs/bench/seeds_cell \
      --config.cell_steps=400

Per mode (``config.modes``): seconds per group step (every run advanced one step: R calls of the
single-run step for 'sequential', as 'interleave' steps, one call of `multirun.group_step`
otherwise) of the real `classification.train_step` on synthetic uint8 sources on the device,
medians after warm-up, and its speed relative to sequential measured in the same run.
``config.torch``: the same ResNet-18 (official structure, `gpjax.bench.torch_reference`, in a
child process so that torch is never imported here) trained with the same Adam step on the same
shapes, in float32 with as many threads as this machine has cores; the ratio is gpjax's
single-run step speed over PyTorch's. ``config.cell_steps=N``: a real study cell too
(``config.cell``: configs/study.py's CPU base, the location task, GAPNet, zero padding, R seeds,
N steps, the built-in digits), trained end to end in each of ``config.cell_modes`` (compiles,
evaluations and checkpoints included), with its wall time and whether every run's test accuracy
and loss equal the sequential one's.
"""

import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import jax
import ml_collections

from gpjax.core import multirun
from gpjax.core import parallel
from gpjax.studies import grid as study
from gpjax.core import trainer
from gpjax import checks
from gpjax.bench import fields, steps
from gpjax.tasks import classification
from gpjax.errors import ConfigError
from gpjax.checks import at_least, one_of

# Modes whose group step is timed: interleave's is sequential's R calls of one run's step.
STEP_MODES = tuple(m for m in multirun.MODES[1:] if m != 'interleave')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field, its value and what is allowed."""
  at_least('seeds', config.seeds, 2)
  for name in ('width', 'source_size', 'grid', 'batch', 'steps'):
    at_least(name, config[name], 1)
  for name in ('warmup', 'cell_steps', 'seed'):
    at_least(name, config[name], 0)
  one_of('head', config.head, ('gapnet', 'permutenet'))
  one_of('backbone', config.backbone, ('resnet18',))
  one_of('torch', config.torch, ('auto', 'off'))
  for name, allowed in (('modes', STEP_MODES), ('cell_modes', multirun.MODES[1:])):
    fields.each(name, config[name], one_of, allowed)
    if config[name][0] != 'sequential':
      raise ConfigError(f'config.{name}={config[name]!r} is not allowed; it must start with '
                        "'sequential', the baseline.")
  classification.check(steps._step_config(config, config.batch, 'float32'))  # config.base.
  if config.cell_steps:
    classification.check(config.cell)


def _group_times(config, mode, setup_step, model, tx, mesh, canvas_shape):
  """(compile seconds, per-group-step seconds) of one mode, fresh states for every run."""
  num = config.seeds
  states = [trainer.init_state(config.seed + r, model, tx, canvas_shape, mesh)
            for r in range(num)]
  hosts = [steps.host_sources(config.batch, config.seed + r, config.source_size)
           for r in range(num)]
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
  for i in range(config.warmup + config.steps):
    start = time.perf_counter()
    jax.block_until_ready(step())
    if i >= config.warmup:
      seconds.append(time.perf_counter() - start)
  return compile_s, seconds


def torch_step(config: ml_collections.ConfigDict, batch: int, canvas_side: int
               ) -> dict[str, Any]:
  """The PyTorch reference's record at ``batch`` from a child process, or why there is none."""
  cmd = [sys.executable, '-m', 'gpjax.bench.torch_reference', '--width', str(config.width),
         '--batch', str(batch), '--size', str(canvas_side),
         '--classes', str(config.grid ** 2), '--steps', str(config.steps),
         '--warmup', str(config.warmup), '--threads', str(os.cpu_count())]
  done = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    return {'error': (done.stderr.strip().splitlines() or ['no output'])[-1]}
  return json.loads(done.stdout.strip().splitlines()[-1])


def _cell(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """A real study cell of R seeds trained end to end in each of ``config.cell_modes``."""
  base = copy.deepcopy(config.cell)
  base.train.steps = base.train.eval_every = config.cell_steps
  base.train.eval_at = ()
  base.seed = config.seed
  configs = [c for _, c in study.grid(base, [('s{seed}', {})], config.seeds)]
  classification.load_data(base)  # Built on first use: outside every timed mode.
  rows = []
  for mode in config.cell_modes:
    with tempfile.TemporaryDirectory() as root:
      start = time.perf_counter()
      results = multirun.train_group(configs, [os.path.join(root, f's{r}')
                                               for r in range(config.seeds)],
                                     classification.TASK, mode)
      rows.append({'mode': mode, 'wall_seconds': time.perf_counter() - start,
                   'test_accuracies': [r['test_accuracy'] for r in results],
                   'test_losses': [r['test_loss'] for r in results]})
  for row in rows:
    row['speedup_vs_sequential'] = rows[0]['wall_seconds'] / row['wall_seconds']
    row['equal_to_sequential'] = all(row[k] == rows[0][k]
                                     for k in ('test_accuracies', 'test_losses'))
  return {'steps': config.cell_steps, 'task': base.task, 'head': base.model.head,
          'padding': base.model.padding, 'width': base.model.width,
          'batch': base.train.batch_size, 'data': base.data.name, 'results': rows}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Times every mode's group step, then the PyTorch step and the real cell if asked."""
  del workdir  # Nothing is kept but the record, which gpjax.bench writes there.
  steps.check_devices('batch', (config.batch,))
  mesh = parallel.make_mesh()
  step_config = steps._step_config(config, config.batch, 'float32')
  model = classification.create_model(step_config, config.grid ** 2)
  tx = trainer.create_optimizer(step_config.train, step_config.train.steps)
  info = steps._SyntheticInfo()
  train_step = lambda state, batch: classification.train_step(  # noqa: E731
      state, batch, model=model, tx=tx, config=step_config, info=info)
  side = config.grid * config.source_size
  rows = []
  for mode in config.modes:
    compile_s, seconds = _group_times(config, mode, train_step, model, tx, mesh, (side, side, 3))
    rows.append({'mode': mode, 'seconds_per_group_step': statistics.median(seconds),
                 'seconds_per_group_step_all': seconds, 'compile_seconds': compile_s,
                 'images_per_s': config.seeds * config.batch / statistics.median(seconds)})
  for row in rows:
    row['speedup_vs_sequential'] = (rows[0]['seconds_per_group_step']
                                    / row['seconds_per_group_step'])
  record = {'settings': {**fields.settings(config), 'canvas_size': side,
                         'optimizer': step_config.train.optimizer, 'dtype': 'float32',
                         'source': f'synthetic uint8 {config.source_size}x{config.source_size}x3'},
            'results': rows}
  if config.torch == 'auto':
    torch = torch_step(config, config.batch, side)
    if 'seconds_per_step' in torch:
      single = rows[0]['seconds_per_group_step'] / config.seeds
      torch['gpjax_seconds_per_step'] = single
      torch['gpjax_speed_over_torch'] = torch['seconds_per_step'] / single
    record['torch'] = torch
  if config.cell_steps:
    record['cell'] = _cell(config)
  return record


def show(record: dict[str, Any]) -> None:
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
