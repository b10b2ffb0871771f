r"""The checkpoint benchmark: seconds per save and per restore of a real train state, packed
(`gpjax.core.checkpoint.save` / `restore_raw`) against leaf by leaf, the layout Orbax writes
for a tree (the baseline), in one run and one process.

  python -m gpjax.bench --config=configs/bench/checkpoint.py --workdir=runs/bench/checkpoint

A save is timed until it is on disk (``wait_until_finished``); a restore is `restore_raw`,
which reads either layout, as probes do. Medians over ``config.repeats``.
"""

import copy
import os
import statistics
import tempfile
import time
from typing import Any

import jax
import ml_collections

from gpjax.bench import fields
from gpjax.checks import at_least, one_of
from gpjax.core import checkpoint, parallel, trainer
from gpjax.errors import ConfigError
from gpjax.tasks import classification

LAYOUTS = ('leaf', 'packed')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field, its value and what is allowed."""
  fields.each('layouts', config.layouts, one_of, LAYOUTS)
  if len(set(config.layouts)) != len(config.layouts):
    raise ConfigError(f'config.layouts={config.layouts!r} is not allowed; name each layout once.')
  for name in ('width', 'grid', 'repeats'):
    at_least(name, config[name], 1)
  at_least('seed', config.seed, 0)
  one_of('head', config.head, ('gapnet', 'permutenet', 'linear'))


def _save(layout: str, manager: Any, step: int, state: Any) -> None:
  if layout == 'packed':
    checkpoint.save(manager, step, state, {})
  else:
    manager.save(step, args=checkpoint.ocp.args.Composite(
        state=checkpoint.ocp.args.StandardSave(state), meta=checkpoint.ocp.args.JsonSave({})))
  manager.wait_until_finished()


def _times(layout: str, state: Any, repeats: int, root: str) -> dict[str, Any]:
  workdir = os.path.join(root, layout)
  manager = checkpoint.make_manager(workdir, repeats)
  saves, restores = [], []
  for step in range(1, repeats + 1):
    start = time.perf_counter()
    _save(layout, manager, step, state)
    saves.append(time.perf_counter() - start)
  manager.close()
  for _ in range(repeats):
    start = time.perf_counter()
    checkpoint.restore_raw(workdir)
    restores.append(time.perf_counter() - start)
  return {'layout': layout, 'seconds_per_save': statistics.median(saves),
          'seconds_per_restore': statistics.median(restores), 'save_seconds_all': saves,
          'restore_seconds_all': restores}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Times every layout on one freshly initialised state of ``config.base``'s kind."""
  del workdir  # Checkpoints go to a temporary folder; gpjax.bench writes the record.
  base = copy.deepcopy(config.base)
  base.model.width, base.model.head, base.data.grid = config.width, config.head, config.grid
  model = classification.create_model(base, config.grid ** 2)
  tx = trainer.create_optimizer(base.train, base.train.steps)
  side = 32 * config.grid
  state = trainer.init_state(config.seed, model, tx, (side, side, 3), parallel.make_mesh())
  leaves = jax.tree.leaves(state)
  with tempfile.TemporaryDirectory() as root:
    rows = [_times(layout, state, config.repeats, root) for layout in config.layouts]
  for row in rows:
    for what in ('save', 'restore'):
      row[f'{what}_speedup'] = rows[0][f'seconds_per_{what}'] / row[f'seconds_per_{what}']
  return {'settings': {**fields.settings(config), 'num_arrays': len(leaves),
                       'num_values': sum(x.size for x in leaves),
                       'optimizer': base.train.optimizer},
          'results': rows}


def show(record: dict[str, Any]) -> None:
  s = record['settings']
  print(f"train state of a width-{s['width']} ResNet-18 {s['head']}: {s['num_arrays']} arrays, "
        f"{s['num_values']:,} values")
  for r in record['results']:
    print(f"{r['layout']:7s} save {1e3 * r['seconds_per_save']:7.1f} ms "
          f"({r['save_speedup']:.1f}x)   restore {1e3 * r['seconds_per_restore']:7.1f} ms "
          f"({r['restore_speedup']:.1f}x)")
