r"""The XLA-options benchmark: the train step under XLA_FLAGS settings against XLA's defaults
in the same run, and against PyTorch's step.

  python -m gpjax.bench --config=configs/bench/xla.py --workdir=runs/bench/xla
  python -m gpjax.bench --config=configs/bench/xla.py --workdir=runs/bench/xla64 \
      --config.width=64 --config.source_size=32 --config.batch=16 \
      --config.settings="('', '--xla_cpu_use_onednn=true')"

Writes DIR/xla.json, and each child's train record in DIR/children/. On a 2-core AMD EPYC
(width 8, batches 16/32/96) no option was faster at every batch: the defaults stay.
"""

import os

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.bench = 'xla'  # What python -m gpjax.bench runs (gpjax.bench.BENCHES).
  # XLA_FLAGS values, the first the baseline ('' = XLA's defaults), then one option each:
  # convolutions and matmuls through XNNPACK or oneDNN, another scheduler, single-threaded
  # Eigen, wider vectors, fast math.
  config.settings = ('', '--xla_cpu_use_xnnpack=true', '--xla_cpu_use_onednn=true',
                     '--xla_cpu_enable_concurrency_optimized_scheduler=true',
                     '--xla_cpu_multi_thread_eigen=false', '--xla_cpu_prefer_vector_width=512',
                     '--xla_cpu_enable_fast_math=true')
  config.batch = (32,)  # Batches, each timed under every setting.
  config.width = 8  # Channels of stage 1 (CPU study: 8).
  config.source_size = 16  # Side of the sources (CPU study: 16; canvases are grid times it).
  config.grid = 3  # g: g*g classes, canvases g sources wide.
  config.head = 'gapnet'  # gapnet or permutenet.
  config.steps = 20  # Timed steps (their median is reported).
  config.warmup = 3  # Untimed steps after compiling.
  config.rounds = 2  # Turns of every setting.
  config.torch = 'auto'  # auto: time the PyTorch step where torch is installed; off: don't.
  config.seed = 0  # Init, sources and canvases.
  # The train benchmark's config, which every child process runs (beside this file).
  config.step_config = os.path.join(os.path.dirname(__file__), 'train.py')
  config.lock()
  return config
