r"""The XLA-options benchmark: the training step under each of several ``XLA_FLAGS`` settings
against XLA's defaults measured in the same run, and against PyTorch's step.

  python -m gpjax.bench --config=configs/bench/xla.py --workdir=runs/bench/xla \
      --config.batch=16,32,64
  python -m gpjax.bench --config=configs/bench/xla.py --workdir=runs/bench/xla64 \
      --config.width=64 --config.source_size=32 --config.batch=16

XLA reads ``XLA_FLAGS`` once, when its backend starts, so every setting runs `gpjax.bench`'s
``train`` benchmark (``config.step_config``: the real `classification.train_step`, float32,
synthetic sources) in a child process of its own, whose record is kept in
``DIR/children/``. The settings take turns for ``config.rounds`` rounds, so that a change
in the machine's load touches all of them alike; each setting's speed is the median over
rounds of the child's median step, its ratio is over the baseline's (the first of
``config.settings``, XLA's defaults). The child's loss after the same steps from the same
state and batch tells whether a setting changes the numbers (``loss_change``). With torch
installed, the same network's step in PyTorch (`gpjax.bench.torch_reference`) at each batch,
in one more child process. Batch shapes are the ``config.batch`` axis; the layout of
convolutions is XLA's own choice on CPU (the flags that hand convolutions to other libraries
are among the settings).
"""

import json
import os
import statistics
import subprocess
import sys
from typing import Any

import ml_collections

from gpjax.bench import fields, seeds
from gpjax.errors import ConfigError
from gpjax.checks import at_least, one_of


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field, its value and what is allowed."""
  if (not isinstance(config.settings, tuple) or not config.settings
      or not all(isinstance(s, str) for s in config.settings)
      or len(set(config.settings)) != len(config.settings)):
    raise ConfigError(f'config.settings={config.settings!r} is not allowed; give a tuple of '
                      "distinct XLA_FLAGS strings, the first the baseline ('' = defaults).")
  fields.each('batch', config.batch, at_least, 1)
  for name in ('width', 'source_size', 'grid', 'steps', 'rounds'):
    at_least(name, config[name], 1)
  for name in ('warmup', 'seed'):
    at_least(name, config[name], 0)
  one_of('head', config.head, ('gapnet', 'permutenet'))
  one_of('torch', config.torch, ('auto', 'off'))
  if not os.path.isfile(config.step_config):
    raise ConfigError(f'config.step_config={config.step_config!r} is not allowed; it must be '
                      'the train benchmark\'s config file, e.g. configs/bench/train.py.')


def _child(config: ml_collections.ConfigDict, setting: str, workdir: str) -> dict[str, Any]:
  """The ``train`` benchmark's record under XLA_FLAGS ``setting`` (kept in ``workdir``), or
  ``{'error': line}``."""
  cmd = [sys.executable, '-m', 'gpjax.bench', f'--config={config.step_config}',
         f'--workdir={workdir}', f"--config.batch={','.join(map(str, config.batch))}",
         '--config.dtype=float32', f'--config.width={config.width}',
         f'--config.head={config.head}', f'--config.grid={config.grid}',
         f'--config.source_size={config.source_size}', f'--config.steps={config.steps}',
         f'--config.warmup={config.warmup}', '--config.matmul_size=0',
         f'--config.seed={config.seed}']
  env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {setting}".strip())
  done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
  if done.returncode != 0:
    return {'error': (done.stderr.strip().splitlines() or ['no output'])[-1]}
  with open(os.path.join(workdir, 'train.json')) as f:
    return json.load(f)


def _rows(config: ml_collections.ConfigDict, records: dict[str, list[dict[str, Any]]]
          ) -> list[dict[str, Any]]:
  """One row per setting x batch (or per failed setting), with its ratio to the baseline."""
  rows = []
  for setting, runs in records.items():
    errors = [r['error'] for r in runs if 'error' in r]
    if errors:
      rows.append({'setting': setting, 'error': errors[0]})
      continue
    for i, b in enumerate(config.batch):
      per_round = [r['results'][i]['seconds_per_step'] for r in runs]
      rows.append({'setting': setting, 'batch': b,
                   'seconds_per_step': statistics.median(per_round),
                   'seconds_per_step_per_round': per_round,
                   'images_per_s': b / statistics.median(per_round),
                   'compile_seconds': runs[0]['results'][i]['compile_seconds'],
                   'final_loss': runs[0]['results'][i]['final_loss']})
  base = _baseline(config, rows)
  for r in rows:
    if 'batch' in r and r['batch'] in base:
      r['speed_over_baseline'] = base[r['batch']]['seconds_per_step'] / r['seconds_per_step']
      r['loss_change'] = r['final_loss'] - base[r['batch']]['final_loss']
  return rows


def _baseline(config: ml_collections.ConfigDict, rows: list[dict[str, Any]]
              ) -> dict[int, dict[str, Any]]:
  """The baseline setting's row of each batch it ran."""
  return {r['batch']: r for r in rows if r['setting'] == config.settings[0] and 'batch' in r}


def _torch(config: ml_collections.ConfigDict, rows: list[dict[str, Any]],
           side: int) -> list[dict[str, Any]]:
  """The PyTorch step at each batch, against the baseline's and the best setting's."""
  base = _baseline(config, rows)
  out = []
  for b in config.batch:
    torch = seeds.torch_step(config, b, side)
    if 'seconds_per_step' in torch and b in base:
      torch['batch'] = b
      torch['gpjax_default_speed_over_torch'] = (torch['seconds_per_step']
                                                 / base[b]['seconds_per_step'])
      best = min((r for r in rows if r.get('batch') == b), key=lambda r: r['seconds_per_step'])
      torch['gpjax_best_setting'] = best['setting']
      torch['gpjax_best_speed_over_torch'] = torch['seconds_per_step'] / best['seconds_per_step']
    out.append(torch)
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Every setting's step per batch over ``config.rounds`` turns, its ratio to the baseline,
  the change of the loss it gives, and the PyTorch step. Child records go to
  ``workdir/children/S_rR/train.json`` (S: the setting's index in ``config.settings``)."""
  records = {s: [] for s in config.settings}
  for r in range(config.rounds):
    for i, setting in enumerate(config.settings):
      child_dir = os.path.join(workdir, 'children', f'{i}_r{r}')
      records[setting].append(_child(config, setting, child_dir))
  rows = _rows(config, records)
  side = config.grid * config.source_size
  record = {'settings': {**fields.settings(config), 'canvas_size': side, 'optimizer': 'adam',
                         'dtype': 'float32'},
            'results': rows}
  if config.torch == 'auto':
    record['torch'] = _torch(config, rows, side)
  return record


def show(record: dict[str, Any]) -> None:
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
