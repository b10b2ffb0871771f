r"""The official recipe side by side with gpjax (`gpjax.bench.parity`).

  python -m gpjax.bench --config=configs/bench/parity.py --workdir=docs/results/parity_seed0

3x3 canvases of 16x16 scikit-learn digits (48x48), ResNet-18 at width 64, batch 48, Adam 1e-3
betas (0.5, 0.999), 625 steps (20 epochs of the 1,500 train digits), tested at steps 156, 312
and 625. Expected (seed 0, one run each, measured elsewhere): GAPNet semantic about 95%,
location 100% on both sides; PermuteNet semantic about 20%, location 20-35%. At width 64 the
PyTorch side alone took 10 s a step on a busy 2-core machine; docs/results/parity_seed0 was run
with --config.width=8 --config.official.threads=1 (about 45 minutes there). On a busy machine
one PyTorch thread is several times faster than two (measured 1.1 vs 10-16 s a step at width 16).
"""

import ml_collections

from configs import location


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.bench = 'parity'  # Which benchmark `python -m gpjax.bench` runs.
  config.seed = 0  # PyTorch's manual_seed and gpjax's config.seed; also the batches' order.
  config.tasks = ('semantic', 'location')  # Label = the digit's class, or its cell.
  config.heads = ('gapnet', 'permutenet')  # GAPNet (conv -> GAP) and PermuteNet.
  config.permute_layer = 5  # PermuteNet's ordering: input of stage 1..4, or 5 = pooled vector.

  config.data = ml_collections.ConfigDict()
  config.data.name = 'gpjax_digits'  # A built-in set (prepared in the data dir if missing).
  config.data.image_size = 16  # Sources resized to 16x16: 48x48 canvases at grid 3.
  config.data.grid = 3  # Cells per canvas side (official: 3).
  config.data.data_dir = ''  # tfds data dir; '' = <workdir>/tfds.

  config.width = 64  # Channels of stage 1 (official: 64).
  config.batch_size = 48  # Official: 48.
  config.steps = 625  # Training steps of every run (20 epochs of 1,500 digits).
  config.eval_at = (156, 312, 625)  # Steps at which both sides are tested; ends at `steps`.

  config.official = ml_collections.ConfigDict()
  # Passes over the test canvases of a PermuteNet, each test batch of 100 under a fresh
  # ordering (as the official test); the mean is reported. GAPNet: one pass.
  config.official.test_passes = 20
  config.official.threads = 0  # torch.set_num_threads; 0 = PyTorch's default.

  config.gpjax = ml_collections.ConfigDict()
  config.gpjax.config_file = 'configs/location.py'  # What gpjax.main trains (paths: repo root).
  # The same file's config: the canvases and batches the PyTorch side is given.
  config.base = location.get_config()

  config.lock()
  return config
