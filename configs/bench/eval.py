r"""The eval benchmark: images per second of the real evaluation step on synthetic sources.

  python -m gpjax.bench --config=configs/bench/eval.py --workdir=runs/bench/eval
  python -m gpjax.bench --config=configs/bench/eval.py --workdir=runs/bench/eval_pn \
      --config.batch=256,1024 --config.head=permutenet

Writes DIR/eval.json: per batch x dtype the median seconds per call of
`gpjax.tasks.classification.eval_step` (canvases + forward + summed metrics), images/s and
FLOPs. The fields are configs/bench/train.py's.
"""

import ml_collections

from configs.bench import train


def get_config() -> ml_collections.ConfigDict:
  config = train.get_config()
  config.bench = 'eval'  # What python -m gpjax.bench runs (gpjax.bench.BENCHES).
  return config
