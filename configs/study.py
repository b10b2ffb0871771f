r"""The paper's location/semantic study: GAPNet vs PermuteNet over six paddings.

Trains every (task, head, padding, grid, seed) of the grid below on the built-in
data, then probes networks trained without permutation (linear head) with random
channel orderings at every layer. Rerunning the command skips finished runs.

  python -m gpjax.main --config=configs/study.py --workdir=runs/study        # CPU size
  python -m gpjax.main --config=configs/study.py:gpu --workdir=runs/study    # paper size

Writes table.md (mean ± std over seeds), accuracy.png and results.json. Expected
(the paper's claims): GAPNet learns location with zero padding far above chance;
PermuteNet loses much more on location than on semantic classification; without
zero padding location is harder; random orderings of an unpermuted network keep
more semantic than location accuracy.
"""

import ml_collections

from configs import location
from configs import permutation_probe

# Each run's training config. The CPU size trains width-8 ResNet-18s for 400 steps on
# 48x48 canvases (16x16 sources: the digits are 8x8 scans, so nothing is lost); about
# 45 s a run on 2 cores. The GPU size is the paper's: width 64, 32x32 sources, 20 epochs.
_SIZES = {
    'cpu': dict(width=8, image_size=16, steps=400, batch_size=32, eval_every=200, grids=(3,), seeds=3,
                probe_orderings=32),
    'gpu': dict(width=64, image_size=0, steps=0, batch_size=48, eval_every=0, grids=(3, 5), seeds=3,
                probe_orderings=1024),
}


def get_config(size: str = 'cpu') -> ml_collections.ConfigDict:
  z = _SIZES[size]
  config = ml_collections.ConfigDict()
  config.job = 'study'  # What gpjax.main runs with this config (see gpjax.main.JOBS).

  config.study = ml_collections.ConfigDict()
  config.study.tasks = ('location', 'semantic')  # Training tasks.
  config.study.heads = ('gapnet', 'permutenet')  # Heads trained with every padding.
  # Border treatments.
  config.study.paddings = ('zero', 'circular', 'reflect', 'replicate', 'partial', 'none')
  config.study.grids = z['grids']  # Canvas grids g.
  config.study.seeds = z['seeds']  # Seeds per cell: base.seed, base.seed + 1, ...
  config.study.train_seeds = 'auto'  # Seeds of a cell in one program (gpjax.core.multirun.MODES).
  config.study.layer_protocol = (1, 2, 3, 4, 5)  # PermuteNet layers trained+tested (() = none).
  config.study.plain_heads = ('gapnet', 'permutenet', 'linear')  # Semantic, plain image (g=1).
  config.study.probe_heads = ('linear',)  # Unpermuted heads probed with orderings (() = none).
  config.study.probe_paddings = ('zero',)  # Paddings of the probed runs.
  # A PermuteNet's share kept of GAPNet's above-chance accuracy needs GAPNet this far above
  # chance (below, the share is noise over a tiny number).
  config.study.retention_margin = 0.1
  config.study.probe_layers = (1, 2, 3, 4, 5)  # Layers probed (stage 1..4 input, 5 = pooled).

  config.base = location.get_config()  # Training config of each run; the grid sets
  config.base.data.name = 'gpjax_digits'  # task, head, padding, grid and seed. One data set
  config.base.model.width = z['width']  # for both tasks, so only the label differs.
  config.base.data.image_size = z['image_size']  # 0 = the sources' own 32x32.
  config.base.train.steps = z['steps']  # 0 = the paper's 20 epochs.
  config.base.train.batch_size = z['batch_size']  # The paper's 48 at full size.
  config.base.train.eval_every = z['eval_every']  # 0 = once per epoch.
  config.base.train.log_every = 50

  config.probe = permutation_probe.get_config()  # Probe settings (source and layer set per run).
  config.probe.probe.num_orderings = z['probe_orderings']
  config.lock()
  return config
