r"""The AugShift study: the lambda-0 baseline vs AugShift at a few lambdas, several seeds.

Trains ResNet-18s (linear head, zero padding) on the semantic task with two shifted copies
per image for every lambda in ``study.sweep_values`` and seed, then measures each trained
run with the invariance job (configs/augshift.py:invariance). Rerunning the command skips
finished runs and measurements.

  python -m gpjax.main --config=configs/augshift_study.py --workdir=runs/augshift_study
  python -m gpjax.main --config=configs/augshift_study.py:gpu --workdir=runs/augshift_c10 \
      --config.base.data.data_dir=DIR       # CIFAR-10, prepared by tfds in DIR beforehand

Writes table.md (test accuracy per lambda; then consistency, readout accuracy, latent
distance and mean accuracy over column offsets, mean ± std over seeds), metrics.png (each
against lambda), accuracy_vs_shift.png, accuracy.png and results.json; each run's
measurements in runs/<name>/invariance/.

Baselines: standard training (``augshift.copies = 1``: one canvas per image, placed as
AugShift's first copy, cross-entropy only; the method's baseline, what the claim is judged
against) and lambda 0 (the same two copies, steps and batch, only the MSE term off: the
loss's own share). Consistency is measured on the shifts AugShift trains for: two
independent uniform pixel placements of the source on the canvas.

Measured numbers (the quick suite's AugShift study, from a fresh clone):
docs/results/reproduce_quick/REPORT.md, claim 4.
"""

import ml_collections

from configs import augshift

# CPU: built-in digits on 48x48 canvases (16x16 sources, g=3), width-8 ResNet-18, 400 steps
# of 32 pairs (64 canvases). GPU: CIFAR-10, 96x96 canvases, width 64, the paper's 20 epochs.
_SIZES = {
    'cpu': dict(data='gpjax_digits', width=8, image_size=16, steps=400, batch_size=32,
                eval_every=200, weights=(0.0, 1.0, 10.0), seeds=3, readout_images=0, num_images=0),
    'gpu': dict(data='cifar10', width=64, image_size=0, steps=0, batch_size=48, eval_every=0,
                weights=(0.0, 0.1, 1.0, 10.0), seeds=3, readout_images=10000, num_images=2000),
}


def get_config(size: str = 'cpu') -> ml_collections.ConfigDict:
  z = _SIZES[size]
  config = ml_collections.ConfigDict()
  config.job = 'augshift_study'  # What gpjax.main runs with this config (see gpjax.main.JOBS).

  config.study = ml_collections.ConfigDict()
  config.study.tasks = ('semantic',)  # AugShift needs a label that does not move with the image.
  config.study.heads = ('linear',)  # GAP + Dense: the latent z is the Dense layer's input.
  config.study.paddings = ('zero',)  # Border treatments.
  config.study.grids = (3,)  # Canvas grids g.
  config.study.seeds = z['seeds']  # Seeds per lambda: base.seed, base.seed + 1, ...
  config.study.train_seeds = 'auto'  # Seeds of a cell in one program (gpjax.core.multirun.MODES).
  config.study.plain_heads = ()  # No plain-image (g=1) runs in this study.
  config.study.probe_heads = ()  # No permutation probes in this study.
  config.study.sweep_field = 'augshift.weight'  # The extra grid axis: a training-config field.
  config.study.sweep_values = z['weights']  # lambdas; 0 = the two-copy baseline.
  config.study.standard_baseline = True  # Also standard training: copy 1 alone, CE only.

  config.base = augshift.get_config()  # Training config of each run (AugShift on).
  config.base.data.name = z['data']  # Built-in digits (CPU) or CIFAR-10 (GPU).
  config.base.data.image_size = z['image_size']  # 0 = the sources' own size.
  config.base.model.width = z['width']
  config.base.train.steps = z['steps']  # 0 = the paper's 20 epochs.
  config.base.train.batch_size = z['batch_size']  # Pairs per step (2x canvases).
  config.base.train.eval_every = z['eval_every']  # 0 = once per epoch.
  config.base.train.log_every = 50

  config.evaluator = augshift.invariance_config()  # Measures each run (source set per run).
  config.evaluator.invariance.readout_images = z['readout_images']  # 0 = the whole train split.
  config.evaluator.invariance.num_images = z['num_images']  # 0 = the whole test split.
  config.lock()
  return config
