r"""The seeds benchmark: R seeds stepped in one program (`gpjax.core.multirun`) against one after
another, and the same network's step in PyTorch.

  python -m gpjax.bench --config=configs/bench/seeds.py --workdir=runs/bench/seeds
  python -m gpjax.bench --config=configs/bench/seeds.py --workdir=runs/bench/seeds_cell \
      --config.cell_steps=400

Writes DIR/seeds.json. On a 2-core Intel Xeon (the second command): per step of three runs
sequential 67.5 ms, unroll 65.4 ms (1.03x), vmap 267.7 ms, map 446.8 ms; the 400-step cell
53.6 s sequential vs 43.9 s unrolled, with equal results.
"""

import ml_collections

from configs import location
from configs import study


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.bench = 'seeds'  # What python -m gpjax.bench runs (gpjax.bench.BENCHES).
  config.seeds = 3  # R: runs stepped together (>= 2).
  # gpjax.core.multirun modes timed, sequential first (the baseline); not interleave, whose
  # group step is sequential's.
  config.modes = ('sequential', 'unroll', 'vmap', 'map')
  config.width = 8  # Channels of stage 1 (CPU study: 8).
  config.source_size = 16  # Side of the sources (CPU study: 16; canvases are grid times it).
  config.grid = 3  # g: g*g classes, canvases g sources wide.
  config.batch = 32  # Batch of each run (CPU study: 32).
  config.head = 'gapnet'  # gapnet or permutenet.
  config.backbone = 'resnet18'  # The PyTorch reference has only resnet18.
  config.steps = 20  # Timed group steps (their median is reported).
  config.warmup = 3  # Untimed group steps after compiling.
  config.torch = 'auto'  # auto: time the PyTorch step where torch is installed; off: don't.
  config.cell_steps = 0  # Train a real study cell of this many steps in each cell mode (0 = no).
  config.cell_modes = ('sequential', 'interleave', 'unroll')  # The cell's, sequential first.
  config.seed = 0  # Run r has seed + r.
  # The step's config; its seed, grid, model and batch are the fields above.
  config.base = location.get_config()
  # The cell's training config (the CPU study's: location, GAPNet, zero padding, the built-in
  # digits); its steps and seed come from cell_steps and seed.
  config.cell = study.get_config('cpu').base
  config.lock()
  return config
