r"""The train benchmark: images per second of the real training step on synthetic sources.

  python -m gpjax.bench --config=configs/bench/train.py --workdir=runs/bench/train
  python -m gpjax.bench --config=configs/bench/train.py --workdir=runs/bench/train_pn \
      --config.head=permutenet --config.batch=48,256 --config.dtype="('bfloat16',)"

Writes DIR/train.json: per batch x dtype the median seconds per step of
`gpjax.tasks.classification.train_step` (shard_map + jit, donated state), images/s, FLOPs
from XLA's cost analysis and, on GPU, the share of a bf16 8192^3 matmul's rate measured in
the same run.
"""

import ml_collections

from configs import location


def add_step_fields(config: ml_collections.ConfigDict) -> None:
  """The fields that the train, eval and canvas benchmarks share."""
  config.batch = (48, 256, 1024)  # Global batch sizes, each timed.
  config.grid = 3  # g: g*g classes, canvases g sources wide.
  config.source_size = 32  # Side of the synthetic uint8 sources (CIFAR: 32; CPU study: 16).
  config.steps = 30  # Timed steps (their median is reported).
  config.warmup = 5  # Untimed steps after compiling.
  config.matmul_size = -1  # n of the bf16 n^3 reference matmul; -1: 8192 on GPU, else 0 (none).
  config.seed = 0  # Init, sources and canvases.


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.bench = 'train'  # What python -m gpjax.bench runs (gpjax.bench.BENCHES).
  add_step_fields(config)
  config.dtype = ('float32', 'bfloat16')  # Compute dtypes, each timed (params stay float32).
  config.width = 64  # Channels of stage 1 (paper: 64).
  config.head = 'gapnet'  # gapnet or permutenet.
  config.backbone = 'resnet18'  # Any of gpjax.models.classifier.BACKBONES.
  # The step's config (Adam 1e-3, zero padding, flips, zero background); its seed, grid,
  # model and batch are the fields above.
  config.base = location.get_config()
  config.lock()
  return config
