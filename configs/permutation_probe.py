r"""Channel-permutation probe of a trained model: test accuracy under K channel orderings.

  python -m gpjax.main --config=configs/permutation_probe.py --workdir=runs/probe_loc \
      --config.probe.source_workdir=runs/loc_perm

Evaluates the newest checkpoint of the trained workdir on its own test canvases
(the ones its evaluations used) with the channels at ``probe.layer`` (input of
stage 1..4, or 5 = the pooled vector before the Dense head) in K orders: row 0
the identity, the others random. Writes ``results.json`` (``accuracy_identity``,
which equals the source's final ``test_accuracy``, or for a PermuteNet its
``test_accuracy_identity``; ``accuracy_per_ordering``;
per-location accuracy; ``summary``: mean/std/min/max over the random orderings)
and ``accuracy_histogram.png`` (identity and chance marked).

Expected (the paper's claim): on the location task random orderings cost a
GAPNet or linear-head model far more accuracy than on the semantic task, where
channel order carries little. A PermuteNet trained with random orderings at
that layer keeps its accuracy under every ordering. Layer 5 needs a Dense head:
for a GAPNet the pooled vector is the logits, so probe layers 1..4.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.job = 'permutation_probe'  # What gpjax.main runs with this config (see gpjax.main.JOBS).

  config.probe = ml_collections.ConfigDict()
  config.probe.source_workdir = ''  # Workdir of a trained run (config.json + checkpoints/).
  config.probe.layer = 5  # Where orderings apply: input of stage 1..4, or 5 = pooled vector.
  config.probe.num_orderings = 64  # K, the identity (row 0) included.
  config.probe.seed = 0  # Row i >= 1 = permutation(fold_in(key(seed), i)): larger K keeps rows.
  config.probe.num_images = 0  # Probe the first N test examples; 0 = the whole test split.
  config.probe.batch_size = 2000  # Test images per jitted call, over all devices and hosts.
  config.probe.image_chunk = 500  # Images per device evaluated at once (bounds memory).
  config.probe.ordering_chunk = 8  # Layers 1-4: orderings at once (each a copy of activations).
  config.probe.head_chunk = 1024  # Layer 5: orderings at once (each only a Dense kernel).
  config.probe.dtype = 'float32'  # Compute dtype: float32 or bfloat16 (faster on accelerators).
  config.probe.data_dir = ''  # tfds data dir; '' = the one the model was trained with.

  config.lock()
  return config
