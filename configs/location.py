r"""Location classification: where on a g x g canvas is the pasted image?

The paper's central experiment with the official training setup (batch 48,
Adam lr 1e-3, betas (0.5, 0.999), 20 epochs, horizontal flips of the source).
GAPNet (3x3 conv -> GAP, no Dense) by default; PermuteNet with
``--config.model.head=permutenet``.

  python -m gpjax.main --config=configs/location.py --workdir=runs/location
  # An official checkpoint (trainval_gapnet.py's) on these test canvases:
  python -m gpjax.main --config=configs/location.py:imported --workdir=runs/official \
      --config.source.torch_checkpoint=resnet18_location_GAP_zero_gridsize_3.pth

Expected with zero padding: test accuracy near 100% (the official result file
reports 100.0% for ResNet-18 GAPNet on CIFAR-10, g=3). With
``--config.model.padding=none`` position is much harder to learn.
"""

import ml_collections

VARIANTS = ('train', 'imported')


def get_config(variant: str = 'train') -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f'variant {variant!r} is not one of {VARIANTS}.')
  config = ml_collections.ConfigDict()
  # What gpjax.main runs with this config (see gpjax.main.JOBS).
  config.job = 'evaluate_torch' if variant == 'imported' else 'train'
  config.seed = 0  # Drives init, canvases, flips and orderings: same seed, same numbers.
  config.task = 'location'  # 'location' (label = cell, row-major) or 'semantic' (label = class).

  config.data = ml_collections.ConfigDict()
  config.data.name = 'gpjax_photos'  # Any tfds image set; gpjax_photos/gpjax_digits are built in.
  config.data.data_dir = ''  # tfds data dir; '' = the tfds default (~/tensorflow_datasets).
  config.data.image_size = 0  # Resize/crop sources to this square size; 0 = keep their size.
  config.data.grid = 3  # g: cells per canvas side (CIFAR 32x32 sources, g=3 -> 96x96).
  config.data.background = 'zero'  # 'zero' (mean colour, official), 'black', 'white', 'noise'.
  config.data.flip = True  # Random horizontal flip of the source image (official).

  config.model = ml_collections.ConfigDict()
  config.model.backbone = 'resnet18'  # resnet18/34/50, vgg11/13/16/19.
  config.model.padding = 'zero'  # zero, circular, reflect, replicate, partial, none.
  config.model.head = 'gapnet'  # gapnet (conv -> GAP = logits), permutenet, linear.
  config.model.permute_layer = 5  # PermuteNet: input of stage 1..4, or 5 = pooled vector.
  config.model.width = 64  # Channels of the first stage; stages use 1x, 2x, 4x, 8x.
  config.model.stem = 'official'  # 'official' (7x7/2, no max-pool) or 'imagenet' (+max-pool).
  config.model.dtype = 'float32'  # Compute dtype: float32 or bfloat16 (params stay float32).
  config.model.init = 'pytorch'  # 'pytorch' (its 1.x defaults, as official) or 'flax' (He/LeCun).

  config.train = ml_collections.ConfigDict()
  config.train.epochs = 20.0  # Passes over the train split (official: 20).
  config.train.steps = 0  # If > 0, train this many steps instead of `epochs`.
  config.train.batch_size = 48  # Global batch over all devices and hosts (official: 48).
  config.train.optimizer = 'adam'  # adam, adamw or sgd.
  config.train.learning_rate = 1e-3  # Constant, as in the official code.
  config.train.b1 = 0.5  # Adam beta1 (official: 0.5).
  config.train.b2 = 0.999  # Adam beta2.
  config.train.weight_decay = 0.0  # adamw/sgd weight decay.
  config.train.momentum = 0.9  # sgd momentum.
  config.train.log_every = 50  # Steps between metrics.jsonl/TensorBoard rows.
  config.train.eval_every = 0  # Steps between evaluations; 0 = once per epoch.
  config.train.eval_at = ()  # Extra evaluation steps, e.g. (100, 300, 1000) (curves).
  config.train.checkpoint_every = 0  # Steps between checkpoints; 0 = at each evaluation.
  config.train.keep_at = ()  # Checkpoints kept for good, e.g. (100, 300) (probes over training).
  config.train.keep_checkpoints = 2  # Newest checkpoints kept (the best one is kept too).

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 500  # Global evaluation batch.
  config.eval.seed = 1  # Fixes the test canvases (cells, noise), identical at every evaluation.
  config.eval.orderings = 64  # PermuteNet: random orderings it is tested under (mean reported).
  config.eval.ordering_chunk = 16  # PermuteNet at layers 1..4: orderings evaluated at once.

  config.augshift = ml_collections.ConfigDict()  # AugShift training (configs/augshift.py).
  config.augshift.enabled = False  # Two shifted copies per image, CE + CE + weight * MSE(z1, z2).
  config.augshift.weight = 0.0  # lambda on MSE(z1, z2), z = GAP latent; 0 = two-copy baseline.
  config.augshift.placement = 'pixel'  # Copies at random pixel offsets ('pixel') or cells ('cell').
  config.augshift.max_shift = 0  # 'pixel': max per-axis distance of copy 2 from copy 1; 0 = any.
  config.augshift.copies = 2  # 2 = the pairs; 1 = standard training on copy 1 alone (CE only).

  if variant == 'imported':
    config.source = ml_collections.ConfigDict()
    # An official GAPNet/PermuteNet .pth ({'net': state_dict}); model.padding must be its own.
    config.source.torch_checkpoint = ''

  config.lock()
  return config
