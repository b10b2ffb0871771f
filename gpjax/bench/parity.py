r"""The official recipe side by side: a PyTorch transcription of the official networks
(`gpjax.bench.official_torch`) and gpjax, trained on the same canvases, test accuracy over steps.

  python -m gpjax.bench --config=configs/bench/parity.py --workdir=docs/results/parity

Per task and head (GAPNet; PermuteNet at ``permute_layer``): the official side is the
transcription with PyTorch's default initialisation (``torch.manual_seed(seed)``), Adam lr
1e-3 betas (0.5, 0.999), BatchNorm in training mode, a fresh ``torch.randperm`` ordering per
forward, tested as the official code tests (eval mode, batches of 100, a fresh ordering per
test batch; ``official.test_passes`` passes over the test canvases). The gpjax side is
``python -m gpjax.main --config=<gpjax.config_file>`` in a child process (its results.json
``curve``). Both train on gpjax's batches and canvases (pure functions of seed and step) and
are tested on gpjax's test canvases. Writes ``results.json``, ``table.md`` (accuracy at
``eval_at`` and the share of above-chance accuracy PermuteNet keeps,
(permutenet - chance) / (gapnet - chance)) and ``accuracy_over_steps.png``. A workdir that
already holds results.json is refused; a finished run of one side is read back, not redone.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from gpjax import lazy
from gpjax.core import figures
from gpjax.core import writers
from gpjax.data import batching, builtin, examples
from gpjax.tasks import classification
from gpjax.errors import ConfigError
from gpjax.checks import at_least, one_of

# The PyTorch transcription, imported (with torch) only when the official side runs.
official_torch = lazy.Module('gpjax.bench.official_torch')
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADS = ('gapnet', 'permutenet')
TASKS = ('location', 'semantic')
SIDES = ('official', 'gpjax')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field, its value and what is allowed."""
  at_least('seed', config.seed, 0)
  for field, values, allowed in (('tasks', config.tasks, TASKS), ('heads', config.heads, HEADS)):
    if not isinstance(values, tuple) or not values or len(set(values)) != len(values):
      raise ConfigError(f'config.{field}={values!r} is not allowed; give a tuple of distinct '
                        f'values from {allowed}.')
    for value in values:
      one_of(field, value, allowed)
  one_of('permute_layer', config.permute_layer, (1, 2, 3, 4, 5))
  one_of('data.name', config.data.name, builtin.BUILTIN_NAMES)
  at_least('data.image_size', config.data.image_size, 0)
  at_least('data.grid', config.data.grid, 1)
  at_least('width', config.width, 1)
  at_least('batch_size', config.batch_size, 1)
  at_least('steps', config.steps, 1)
  at_least('official.test_passes', config.official.test_passes, 1)
  at_least('official.threads', config.official.threads, 0)
  steps = config.eval_at
  if (not isinstance(steps, tuple) or not steps or list(steps) != sorted(set(steps))
      or steps[0] < 1 or steps[-1] != config.steps):
    raise ConfigError(f'config.eval_at={steps!r} is not allowed; give increasing steps in '
                      f'[1, config.steps={config.steps}] ending at config.steps.')
  if not os.path.isfile(os.path.join(REPO, config.gpjax.config_file)):
    raise ConfigError(f'config.gpjax.config_file={config.gpjax.config_file!r} is not allowed; '
                      'it must name a config file under the repository, e.g. '
                      "'configs/location.py'.")


def _data_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  return config.data.data_dir or os.path.join(os.path.abspath(workdir), 'tfds')


def _gpjax_config(config: ml_collections.ConfigDict, task: str, head: str,
                  data_dir: str) -> ml_collections.ConfigDict:
  """configs/location.py with the run's fields: the canvases and batches both sides use."""
  c = copy.deepcopy(config.base)
  c.seed, c.task = config.seed, task
  c.data.name, c.data.image_size, c.data.grid = (config.data.name, config.data.image_size,
                                                 config.data.grid)
  c.data.data_dir = data_dir
  c.model.head, c.model.permute_layer, c.model.width = head, config.permute_layer, config.width
  c.train.steps, c.train.batch_size = config.steps, config.batch_size
  return c


def _official_run(config: ml_collections.ConfigDict, task: str, head: str, data_dir: str,
                  bar: tqdm.tqdm) -> dict[str, Any]:
  """Trains and tests the transcription; {'curve': [{step, test_accuracy}], 'seconds'}."""
  import torch  # Only this side needs torch (a test dependency, never a run-time one).

  if config.official.threads:
    torch.set_num_threads(config.official.threads)
  c = _gpjax_config(config, task, head, data_dir)
  train_src, test_src, info = classification.load_data(c)
  num_classes = classification.num_classes(c, info)

  @jax.jit
  def canvases(batch, step):  # As gpjax's train_step makes them (seed, step, then 0).
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(c.seed), step), 0)
    images, labels, _ = examples.make_examples(key, batch, c, info, flip=c.data.flip)
    return images, labels

  def to_torch(images, labels):
    return (torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(np.asarray(labels).astype(np.int64)))

  test_images, test_labels = [], []
  for batch in batching.eval_batches(test_src, c.eval.batch_size):
    images, labels, _ = examples.eval_examples(batch, c, info)
    keep = np.asarray(batch['mask'])
    test_images.append(np.asarray(images)[keep])
    test_labels.append(np.asarray(labels)[keep])
  test_x, test_y = to_torch(np.concatenate(test_images), np.concatenate(test_labels))

  torch.manual_seed(config.seed)
  model = official_torch.ResNet18Official(head, num_classes, width=config.width)
  optimizer = official_torch.make_optimizer(model)
  layer = config.permute_layer
  curve, start = [], time.time()
  for step in range(config.steps):
    batch = batching.host_batch(train_src, step, global_batch_size=config.batch_size,
                                seed=config.seed)
    images, labels = to_torch(*canvases({k: batch[k] for k in ('image', 'label', 'index')},
                                         step))
    ordering = official_torch.draw_ordering(model, layer) if head == 'permutenet' else None
    official_torch.train_step(model, optimizer, images, labels, ordering, layer)
    bar.update(1)
    if step + 1 in config.eval_at:
      accuracy = np.mean([official_torch.test_accuracy(model, test_x, test_y, layer=layer)
                          for _ in range(config.official.test_passes if head == 'permutenet'
                                         else 1)])
      curve.append({'step': step + 1, 'test_accuracy': float(accuracy)})
  return {'curve': curve, 'seconds': time.time() - start, 'num_test': len(test_y)}


def _gpjax_run(config: ml_collections.ConfigDict, task: str, head: str, data_dir: str,
               workdir: str, bar: tqdm.tqdm) -> dict[str, Any]:
  """``python -m gpjax.main`` in a child process; {'curve', 'seconds'} from its results.json."""
  flags = {'seed': config.seed, 'task': task, 'data.name': config.data.name,
           'data.image_size': config.data.image_size, 'data.grid': config.data.grid,
           'data.data_dir': data_dir, 'model.head': head,
           'model.permute_layer': config.permute_layer, 'model.width': config.width,
           'train.steps': config.steps, 'train.batch_size': config.batch_size,
           'train.eval_every': config.steps,
           'train.eval_at': tuple(config.eval_at)}
  argv = [sys.executable, '-m', 'gpjax.main', f'--config={config.gpjax.config_file}',
          f'--workdir={workdir}'] + [f'--config.{k}={v}' for k, v in flags.items()]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (REPO, os.environ.get('PYTHONPATH', '')) if p))
  os.makedirs(workdir, exist_ok=True)
  start, done = time.time(), 0
  with open(os.path.join(workdir, 'log.txt'), 'a') as log:
    child = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    while child.poll() is None:  # The bar follows the child's metrics.jsonl rows.
      time.sleep(2)
      step = _last_step(os.path.join(workdir, 'metrics.jsonl'))
      bar.update(max(0, step - done))
      done = max(done, step)
  bar.update(config.steps - done)
  if child.returncode:
    raise RuntimeError(f'gpjax.main failed (exit {child.returncode}); see '
                       f'{os.path.join(workdir, "log.txt")}.')
  results = writers.read_json(os.path.join(workdir, 'results.json'))
  curve = [{'step': int(r['step']), 'test_accuracy': float(r['test_accuracy'])}
           for r in results['curve'] if int(r['step']) in config.eval_at]
  return {'curve': curve, 'seconds': time.time() - start}


def _last_step(path: str) -> int:
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return max((int(r['step']) for r in rows), default=0)


def shares(curves: dict[str, dict[str, list]], chance: dict[str, float]) -> dict[str, float]:
  """Per task: (permutenet - chance) / (gapnet - chance) at the last step, of one side
  (None where GAPNet is not above chance)."""
  out = {}
  for task, heads in curves.items():
    if 'gapnet' in heads and 'permutenet' in heads:
      gap, perm = heads['gapnet'][-1]['test_accuracy'], heads['permutenet'][-1]['test_accuracy']
      above = gap - chance[task]  # None: a GAPNet at chance leaves no share to keep.
      out[task] = (perm - chance[task]) / above if above > 0 else None
  return out


def table(results: dict[str, Any]) -> str:
  """The markdown table of accuracies (percent) at each evaluation step, then the shares."""
  steps = results['eval_at']
  head = ' | '.join([f'official {s}' for s in steps] + [f'gpjax {s}' for s in steps])
  lines = [f'| head | task | {head} |', '|' + '---|' * (2 + 2 * len(steps))]
  for h in results['heads']:
    for task in results['tasks']:
      cells = [f'{100 * r["test_accuracy"]:.1f}' for side in SIDES
               for r in results['curves'][side][task][h]]
      lines.append(f'| {h} | {task} | {" | ".join(cells)} |')
  if not any(results['shares'][side] for side in SIDES):  # Not both heads: no shares.
    return '\n'.join(lines) + '\n'
  lines += ['', f'Share of above-chance accuracy PermuteNet keeps at step {steps[-1]}, '
            '(permutenet - chance) / (gapnet - chance):', '',
            '| task | chance | official | gpjax |', '|---|---|---|---|']
  for task in results['tasks']:
    if task in results['shares']['official']:
      cells = ['n/a' if results['shares'][side][task] is None else
               f'{results["shares"][side][task]:.3f}' for side in SIDES]
      lines.append(f'| {task} | {results["chance"][task]:.3f} | {" | ".join(cells)} |')
  return '\n'.join(lines) + '\n'


def save_figure(path: str, results: dict[str, Any]) -> None:
  """Test accuracy against steps: one panel per task, both sides and heads."""
  plt = figures.plt
  tasks = results['tasks']
  fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
  for ax, task in zip(axes[0], tasks):
    for i, h in enumerate(results['heads']):
      for side, style in zip(SIDES, ('-', '--')):
        rows = results['curves'][side][task][h]
        ax.plot([r['step'] for r in rows], [100 * r['test_accuracy'] for r in rows], style,
                marker='o', color=f'C{i}', label=f'{h} ({side})')
    ax.axhline(100 * results['chance'][task], color='gray', lw=0.8, ls=':', label='chance')
    ax.set_xlabel('training step')
    ax.set_ylabel('test accuracy (%)')
    ax.set_ylim(0, 102)
    ax.set_title(f'{task}: official transcription vs gpjax', fontsize=9)
    ax.legend(fontsize=7)
  figures._save(fig, path)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains every (side, task, head) of ``config`` in ``workdir``; returns results.json's dict."""
  validate(config)
  out_path = os.path.join(workdir, 'results.json')
  if os.path.exists(out_path):
    raise FileExistsError(f'{out_path} exists: give a new --workdir (results are not '
                          'overwritten).')
  os.makedirs(workdir, exist_ok=True)
  data_dir = _data_dir(config, workdir)
  builtin.prepare(config.data.name, data_dir)
  chance = {}
  for task in config.tasks:
    c = _gpjax_config(config, task, 'gapnet', data_dir)
    chance[task] = 1.0 / classification.num_classes(c, classification.load_data(c)[2])
  runs = [(side, task, h) for task in config.tasks for h in config.heads for side in SIDES]
  curves = {side: {task: {} for task in config.tasks} for side in SIDES}
  seconds = {}
  with tqdm.tqdm(total=len(runs) * config.steps, desc='parity', unit='step') as bar:
    for side, task, h in runs:
      name = f'{task}_{h}'
      bar.set_postfix_str(f'{side} {name}')
      done_path = os.path.join(workdir, side, f'{name}.json')
      if os.path.exists(done_path):  # Finished before an interruption: read back.
        one = writers.read_json(done_path)
        bar.update(config.steps)
      elif side == 'official':
        one = _official_run(config, task, h, data_dir, bar)
      else:
        one = _gpjax_run(config, task, h, data_dir, os.path.join(workdir, side, name), bar)
      os.makedirs(os.path.dirname(done_path), exist_ok=True)
      writers.write_json(done_path, one)
      curves[side][task][h] = one['curve']
      seconds[f'{side}/{name}'] = one['seconds']
  results = {'config': config.to_dict(), 'tasks': list(config.tasks),
             'heads': list(config.heads), 'eval_at': list(config.eval_at), 'chance': chance,
             'curves': curves, 'shares': {side: shares(curves[side], chance) for side in SIDES},
             'seconds': seconds}
  with open(os.path.join(workdir, 'table.md'), 'w') as f:
    f.write(table(results))
  save_figure(os.path.join(workdir, 'accuracy_over_steps.png'), results)
  writers.write_json(out_path, results)
  return results


def show(record: dict[str, Any]) -> None:
  """Prints the side-by-side table."""
  print(table(record))
