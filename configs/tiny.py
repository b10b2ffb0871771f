r"""A CPU-sized location run for tests and smoke checks (about a minute on 2 cores).

  python -m gpjax.main --config=configs/tiny.py --workdir=runs/tiny
  python -m gpjax.main --config=configs/tiny.py:semantic --workdir=runs/tiny_sem

Expected: location test accuracy well above chance (1/4) with zero padding.
"""

import ml_collections

from configs import location
from configs import semantic


def get_config(task: str = 'location') -> ml_collections.ConfigDict:
  if task not in ('location', 'semantic'):
    raise ValueError(f'task {task!r} is not one of (\'location\', \'semantic\').')
  config = semantic.get_config() if task == 'semantic' else location.get_config()
  config.data.grid = 2  # 2x2 canvas of 32x32 sources: 64x64.
  config.model.width = 8  # Tiny ResNet-18 of the same shape.
  config.train.steps = 60  # A short run.
  config.train.batch_size = 32
  config.train.log_every = 10
  config.train.eval_every = 30
  config.eval.batch_size = 200
  return config
