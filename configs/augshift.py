r"""AugShift: a classifier trained to give the same GAP latent for two shifts of an image.

  python -m gpjax.main --config=configs/augshift.py --workdir=runs/augshift
  python -m gpjax.main --config=configs/augshift.py --workdir=runs/augshift_base \
      --config.augshift.weight=0                      # the baseline: same copies, lambda 0
  python -m gpjax.main --config=configs/augshift.py:invariance \
      --workdir=runs/augshift/invariance --config.invariance.source_workdir=runs/augshift

Training: each source is pasted at two random pixel offsets x1, x2 of the g x g canvas
(anywhere it fits; ``augshift.placement='cell'`` for two random cells, ``max_shift`` to
keep x2 near x1); both copies go through the network as one batch; loss = CE(y1) + CE(y2)
+ lambda * MSE(z1, z2), z = the GAP latent of the backbone. Semantic task only (a location
label moves with the image). Test accuracy is measured on the usual cell canvases.

The ``invariance`` job measures a trained workdir (gpjax/probes/invariance.py):
consistency over fixed shift pairs, accuracy vs column offset, latent distance between
shifted copies, and a linear readout of the cell from the frozen latent; results.json and
invariance.png. The study over lambda and seeds is configs/augshift_study.py.

Expected: a smaller latent distance between shifted copies and a lower location readout
than the lambda-0 baseline, at similar accuracy for lambda ~1; the measured CPU-size
numbers are in docs/results/reproduce_quick/REPORT.md (claim 4).
"""

import ml_collections

from configs import semantic


def get_config(job: str = 'train') -> ml_collections.ConfigDict:
  if job not in ('train', 'invariance'):
    raise ValueError(f"variant {job!r} is not one of ('train', 'invariance').")
  if job == 'invariance':
    return invariance_config()
  config = semantic.get_config()
  config.augshift.enabled = True
  config.augshift.weight = 1.0  # lambda (configs/augshift_study.py compares 0, 1, 10).
  return config


def invariance_config() -> ml_collections.ConfigDict:
  """The ``invariance`` job's config (also the study's evaluator)."""
  config = ml_collections.ConfigDict()
  config.job = 'invariance'  # What gpjax.main runs with this config (see gpjax.main.JOBS).
  config.invariance = ml_collections.ConfigDict()
  config.invariance.source_workdir = ''  # Workdir of a trained run (config.json + checkpoints/).
  config.invariance.source_step = 0  # Its checkpoint measured; 0 = the newest.
  config.invariance.seed = 0  # Draws the shift pairs (stored), readout cells, noise backgrounds.
  config.invariance.num_pairs = 16  # K offset pairs for consistency, the same K for every image.
  config.invariance.curve_points = 9  # Column offsets of the accuracy curve, 0..(g-1)w evenly.
  config.invariance.num_images = 0  # Test images measured; 0 = the whole test split.
  config.invariance.readout_images = 0  # Train canvases the readout is fit on; 0 = all.
  config.invariance.readout_c = 1.0  # Inverse L2 strength of the readout logistic regression.
  config.invariance.batch_size = 256  # Canvases per forward pass.
  config.invariance.data_dir = ''  # tfds data dir; '' = the one the model was trained with.
  config.lock()
  return config
