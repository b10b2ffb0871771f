r"""The canvas benchmark: canvases per second of `gpjax.data.canvas.canvas_batch` on the device.

  python -m gpjax.bench --config=configs/bench/canvas.py --workdir=runs/bench/canvas
  python -m gpjax.bench --config=configs/bench/canvas.py --workdir=runs/bench/canvas_1024 \
      --config.batch=1024 --config.grid=3

Writes DIR/canvas.json: per batch the median seconds per call (flip, zero background, keyed
per example as in training) and canvases/s.
"""

import ml_collections

from configs.bench import train


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.bench = 'canvas'  # What python -m gpjax.bench runs (gpjax.bench.BENCHES).
  train.add_step_fields(config)
  config.lock()
  return config
