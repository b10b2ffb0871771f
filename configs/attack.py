r"""Position attack on a segmentation model: rank the channels of the backbone's last map
by |z - z_flip| (overall) and z - z_flip (left/right), zero the top N, measure mIoU.

  # A model trained with configs/segmentation.py:
  python -m gpjax.main --config=configs/attack.py --workdir=runs/attack \
      --config.source.workdir=runs/seg
  # Only the ranking (ranking.json):
  python -m gpjax.main --config=configs/attack.py:rank --workdir=runs/rank \
      --config.source.workdir=runs/seg
  # The authors' released Cityscapes checkpoint (VainF layout; torch needed to read it),
  # on Cityscapes val prepared in the tfds data dir:
  python -m gpjax.main --config=configs/attack.py:imported --workdir=runs/attack_city \
      --config.source.torch_checkpoint=best_deeplabv3_resnet50_cityscapes_os16.pth

Writes ranking.json, results.json (mIoU per region for clean, top-N overall /
left / right and random-N draws) and curves.png. Expected (the paper's claims):
zeroing the top-N overall channels costs much more mIoU than N random ones; the
top-N left channels hurt the left region more than the right one, and vice versa.
"""

import ml_collections

_COUNTS = (0, 10, 25, 50, 100, 200, 400)  # N zeroed; N > C is skipped (C = 256 at width 8).
VARIANTS = ('trained', 'rank', 'imported')


def get_config(variant: str = 'trained') -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f'variant {variant!r} is not one of {VARIANTS}.')
  config = ml_collections.ConfigDict()
  config.job = 'rank' if variant == 'rank' else 'attack'  # See gpjax.main.JOBS.

  config.source = ml_collections.ConfigDict()
  config.source.workdir = ''  # A trained `segment` workdir (config.json + checkpoints/).
  config.source.step = 0  # Its checkpoint attacked; 0 = the newest.
  config.source.torch_checkpoint = ''  # Or a PyTorch .pth (VainF/torchvision DeepLabv3 layout).

  config.data = ml_collections.ConfigDict()
  config.data.name = 'cityscapes' if variant == 'imported' else ''  # '' = the source's set.
  config.data.split = 'eval'  # 'eval' = the set's test/validation split, or any tfds split.
  config.data.data_dir = ''  # tfds data dir; '' = the source's, else the tfds default.
  config.data.image_height = 0  # Shrink-and-pad to this size; 0 = the source's / stored size.
  config.data.image_width = 0  # (Cityscapes at full 1024x2048 as the paper: keep 0.)

  config.probe = ml_collections.ConfigDict()
  config.probe.batch_size = 2 if variant == 'imported' else 50  # Images per call, all devices.
  config.probe.num_examples = 0  # First N evaluation images; 0 = all (Cityscapes val: 500).
  config.probe.mask_chunk = 4 if variant == 'imported' else 8  # Masks through the head at once.
  config.probe.dtype = 'float32'  # float32 or bfloat16.
  config.probe.ranking_file = ''  # Reuse a ranking.json instead of ranking again.

  config.attack = ml_collections.ConfigDict()
  config.attack.counts = _COUNTS  # The N zeroed (official default 100 of 2048).
  config.attack.random_draws = 5  # Random N-channel sets per N (baseline).
  config.attack.seed = 0  # Draw r zeroes default_rng((seed, r)).permutation(C)[:N].

  config.lock()
  return config
