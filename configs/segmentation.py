r"""DeepLabv3-ResNet50 (output stride 16) semantic segmentation on the built-in street scenes.

  python -m gpjax.main --config=configs/segmentation.py --workdir=runs/seg        # CPU size
  python -m gpjax.main --config=configs/segmentation.py:gpu --workdir=runs/seg_gpu

``cpu``: width-8 ResNet-50 (stage-4 map of 256 channels) on 64x128 scenes
(gpjax_street), 600 Adam steps; about 10 minutes on 2 CPU cores. ``gpu``: the
paper's network (width 64, 2048 channels, ASPP 256) on 128x256 scenes
(gpjax_street/large) with the official recipe (SGD 0.01, momentum 0.9, poly
decay, weight decay 1e-4, backbone rate x0.1, batch 16, backbone BatchNorm
momentum 0.01 in PyTorch terms), 30k steps.
``tiny`` is for the end-to-end tests (seconds).

For Cityscapes (prepared in the tfds data dir): ``--config.data.name=cityscapes
--config.data.crop_height=513 --config.data.crop_width=513 --config.data.flip=True
--config.data.color_jitter=0.5`` (the official training crops, flips and
ColorJitter). The official backbone starts from torchvision's ImageNet ResNet-50;
nothing is downloaded here, so give its file yourself:
``--config.model.pretrained_backbone=resnet50-0676ba61.pth`` (``:gpu``, width 64).

Writes results.json with test_miou (mean IoU over classes, ignore label 255),
per-class IoU and the best mIoU. Expected: the CPU size reaches a test mIoU well
above a constant prediction (~0.1); the road/sidewalk pair, told apart mostly by
position, is the hardest.
"""

import ml_collections

_SIZES = {
    'tiny': dict(name='gpjax_street', height=32, width=64, model_width=4, aspp=8, steps=4,
                 batch=4, optimizer='adam', lr=1e-3, schedule='constant', eval_examples=16, bn=0.9),
    'cpu': dict(name='gpjax_street', height=0, width=0, model_width=8, aspp=32, steps=600,
                batch=16, optimizer='adam', lr=1e-3, schedule='poly', eval_examples=0, bn=0.9),
    'gpu': dict(name='gpjax_street/large', height=0, width=0, model_width=64, aspp=256,
                steps=30_000, batch=16, optimizer='sgd', lr=0.01, schedule='poly',
                eval_examples=0, bn=0.99),
}


def get_config(size: str = 'cpu') -> ml_collections.ConfigDict:
  z = _SIZES[size]
  config = ml_collections.ConfigDict()
  config.job = 'segment'  # What gpjax.main runs with this config (see gpjax.main.JOBS).
  config.seed = 0  # Drives init, data order, crops, colour jitter, flips and dropout.

  config.data = ml_collections.ConfigDict()
  config.data.name = z['name']  # gpjax_street[/large] (built in), cityscapes, voc/2012.
  config.data.data_dir = ''  # tfds data dir; '' = the tfds default (~/tensorflow_datasets).
  config.data.image_height = z['height']  # Shrink-and-pad examples to this size; 0 = stored size.
  config.data.image_width = z['width']
  config.data.crop_height = 0  # Random training crop (official Cityscapes: 513); 0 = none.
  config.data.crop_width = 0
  config.data.flip = False  # Random horizontal flips (official: on). Off here: the built-in
  # scenes' left/right layout is the position prior under study.
  config.data.color_jitter = 0.0  # ColorJitter(s, s, s) strength: brightness, contrast and
  # saturation factors in [1 - s, 1 + s], random order (official Cityscapes: 0.5); 0 = off.
  # Off for the built-in scenes, as flips: the CPU runs keep their established protocol.

  config.model = ml_collections.ConfigDict()
  config.model.backbone = 'resnet50'  # resnet50 (paper), resnet18/34 for quick runs.
  config.model.width = z['model_width']  # Stem/stage-1 channels; stage 4 has 32x (2048 at 64).
  config.model.aspp_features = z['aspp']  # ASPP and 3x3 head channels (paper: 256).
  config.model.padding = 'zero'  # Backbone: zero, circular, reflect, replicate, partial, none.
  config.model.head_padding = 'zero'  # Head border (official: zero).
  config.model.dropout = 0.1  # After the ASPP projection (official).
  config.model.backbone_bn_momentum = z['bn']  # Backbone BatchNorm decay, Flax convention
  # (m x running + (1 - m) x batch; official: PyTorch 0.01 = 0.99 here). cpu/tiny: 0.9 (PyTorch's
  # 0.1), the protocol of the committed CPU runs. The head's stays 0.9, as the official code's.
  config.model.pretrained_backbone = ''  # torchvision ResNet .pth (official: ImageNet
  # resnet50-*.pth) read weights-only into the backbone; '' = from scratch. Needs width 64.
  config.model.dtype = 'float32'  # Compute dtype: float32 or bfloat16.

  config.train = ml_collections.ConfigDict()
  config.train.steps = z['steps']  # Training steps (0 = use epochs).
  config.train.epochs = 0.0  # Passes over train when steps = 0.
  config.train.batch_size = z['batch']  # Global batch over all devices and hosts.
  config.train.optimizer = z['optimizer']  # sgd (official) or adam (AdamW).
  config.train.momentum = 0.9  # sgd momentum (official: 0.9).
  config.train.learning_rate = z['lr']  # Head rate (official SGD: 0.01).
  config.train.schedule = z['schedule']  # poly: rate x (1 - step/total)^poly_power; constant.
  config.train.poly_power = 0.9  # Exponent of the poly decay (official: 0.9).
  config.train.backbone_lr_scale = 0.1  # Backbone rate = this x head rate (official: 0.1).
  config.train.weight_decay = 1e-4  # Official: 1e-4.
  config.train.b1 = 0.9  # Adam beta1.
  config.train.b2 = 0.999  # Adam beta2.
  config.train.log_every = 10 if size != 'tiny' else 2  # Steps between metrics rows.
  config.train.eval_every = 0  # Steps between evaluations; 0 = once per epoch.
  config.train.eval_at = ()  # Extra evaluation steps, e.g. (100, 300, 1000) (curves).
  config.train.checkpoint_every = 0  # Steps between checkpoints; 0 = at each evaluation.
  config.train.keep_at = ()  # Checkpoints kept for good, e.g. (100, 300) (probes over training).
  config.train.keep_checkpoints = 2  # Newest checkpoints kept (the best one too).

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 8 if size == 'gpu' else 50 if size == 'cpu' else 8  # Global batch.
  config.eval.num_examples = z['eval_examples']  # First N evaluation examples; 0 = all.

  config.lock()
  return config
