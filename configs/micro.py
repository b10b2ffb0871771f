r"""The smallest location run that still learns, for the end-to-end tests (~20 s on 2 CPU cores).

  python -m gpjax.main --config=configs/micro.py --workdir=runs/micro

Expected: location test accuracy above 0.9 with zero padding (GAPNet on gpjax_photos).
"""

import ml_collections

from configs import tiny


def get_config(task: str = 'location') -> ml_collections.ConfigDict:
  config = tiny.get_config(task)
  config.data.image_size = 16  # Sources resized to 16x16: 32x32 canvases (tiny: 64x64).
  config.model.width = 4  # Half of tiny: stages of 4, 8, 16, 32 channels.
  config.train.steps = 30  # Enough for GAPNet + zero padding to locate the image (~0.98).
  config.train.batch_size = 16  # Divisible by 1, 2 and 8 devices.
  config.train.log_every = 5  # Six train rows.
  config.train.eval_every = 15  # Two evaluations.
  config.train.checkpoint_every = 5  # Checkpoints at steps 5, 10, ..., 30.
  config.train.keep_checkpoints = 10  # Keep them all, for the resume tests.
  config.eval.batch_size = 1000  # Two batches over the 2,000 test canvases; divisible by 8.
  return config
