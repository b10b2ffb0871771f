r"""The paper's segmentation application end to end, over seeds: train DeepLabv3 on the
built-in street scenes, rank position channels, attack (clean vs top-N overall vs
random-N, and the region-specific attack).

  python -m gpjax.main --config=configs/segmentation_study.py --workdir=runs/seg_study
  python -m gpjax.main --config=configs/segmentation_study.py:gpu --workdir=runs/seg_study_gpu

Writes table.md (mIoU per region at N = study.table_count, mean ± std over
seeds), curves.png (mean mIoU vs N per region) and results.json; each seed's
training run and attack stay in runs/seed{s} and attacks/seed{s}. Rerunning
skips finished steps.

Expected (the paper's claims): top-N overall costs much more mIoU than random
N; top-N left hurts the left region more than the right, and top-N right the
reverse. ``cpu`` (3 seeds of configs/segmentation.py:cpu, N = 25 of 256
channels, about 10% as the paper's 100 of 2048 is 5%) and ``gpu`` (the paper's
network, N = 100 of 2048).
"""

import ml_collections

from configs import attack
from configs import segmentation


# Per size: the table's N, the attack's images per call and the N zeroed (
# N > C is skipped). cpu/tiny: C = 256 channels at width 8 (128 at tiny); gpu: C = 2048.
_SIZES = {
    'tiny': dict(table_count=25, batch_size=50, counts=(0, 10, 25, 50, 100, 200)),
    'cpu': dict(table_count=25, batch_size=50, counts=(0, 10, 25, 50, 100, 200)),
    'gpu': dict(table_count=100, batch_size=8, counts=(0, 10, 25, 50, 100, 200, 400)),
}


def get_config(size: str = 'cpu') -> ml_collections.ConfigDict:
  z = _SIZES[size]
  config = ml_collections.ConfigDict()
  config.job = 'segment_study'  # What gpjax.main runs with this config (see gpjax.main.JOBS).

  config.study = ml_collections.ConfigDict()
  config.study.seeds = 3  # Seeds base.seed, base.seed + 1, ...
  config.study.train_seeds = 'auto'  # Seeds of a cell in one program (gpjax.core.multirun.MODES).
  config.study.table_count = z['table_count']  # N of the table (one of the counts).

  config.base = segmentation.get_config(size)  # Training config of each seed.
  config.attack = attack.get_config()  # Rank + attack settings (source set per seed).
  config.attack.probe.batch_size = z['batch_size']
  config.attack.attack.counts = z['counts']
  config.lock()
  return config
