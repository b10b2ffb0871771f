r"""The checkpoint benchmark: a real train state saved and read back packed (one array per
dtype, `gpjax.core.checkpoint`) against leaf by leaf (Orbax's own layout) in the same run.

  python -m gpjax.bench --config=configs/bench/checkpoint.py --workdir=runs/bench/checkpoint
  python -m gpjax.bench --config=configs/bench/checkpoint.py --workdir=runs/bench/ckpt64 \
      --config.width=64

Writes DIR/checkpoint.json. On a 2-core AMD EPYC, width 8 (229 arrays, 0.5M values): a save
62 ms packed vs 673 ms leaf by leaf, a restore 44 vs 799 ms; width 64 (33.7M values): 0.85 vs
0.98 s, 0.40 vs 1.09 s (docs/benchmarks/checkpoint_cpu_epyc2_width*.json).
"""

import ml_collections

from configs import location


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.bench = 'checkpoint'  # What python -m gpjax.bench runs (gpjax.bench.BENCHES).
  # Layouts timed, the first the baseline: 'leaf' (an Orbax array per leaf) or 'packed'.
  config.layouts = ('leaf', 'packed')
  config.width = 8  # Channels of stage 1 of the ResNet-18 (CPU study: 8; paper: 64).
  config.head = 'gapnet'  # gapnet, permutenet or linear.
  config.grid = 3  # g: g*g classes.
  config.repeats = 10  # Saves (each at its own step) and restores timed per layout.
  config.seed = 0  # Initialisation.
  config.base = location.get_config()  # The run whose state is saved (Adam: params x 3).
  config.lock()
  return config
