r"""Semantic classification on the same canvases: what is the pasted image?

Same canvases, backbones and training as ``configs/location.py``; the label is
the class of the pasted image (built-in default: scikit-learn's digits).

  python -m gpjax.main --config=configs/semantic.py --workdir=runs/semantic

Expected: high accuracy for both GAPNet and PermuteNet (channel order carries
little semantic information), unlike the location task.
"""

import ml_collections

from configs import location


def get_config() -> ml_collections.ConfigDict:
  config = location.get_config()
  config.task = 'semantic'  # Label = class of the pasted image.
  config.data.name = 'gpjax_digits'  # 10 classes, real scans of handwritten digits.
  config.model.head = 'linear'  # GAP + Dense (GAPNet works too: --config.model.head=gapnet).
  return config
