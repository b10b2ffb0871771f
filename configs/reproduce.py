r"""The paper's findings from one command: three studies and a report with a verdict per claim.

  python -m gpjax.main --config=configs/reproduce.py:quick --workdir=runs/reproduce  # 2 CPU cores
  python -m gpjax.main --config=configs/reproduce.py:paper --workdir=runs/paper      # GPU/TPU

Suites: ``micro`` (the end-to-end tests, a couple of minutes), ``quick`` (the built-in
data at CPU size), ``standard`` (the same data with 4x the PermuteNet and 3x the AugShift
and segmentation training, three seeds, fewer side cells: about an hour) and ``paper`` (ResNet-18 at width 64 on 96x96 canvases for 20 epochs,
3 seeds, on CIFAR-10 when it is prepared in ``data_dir``, else on the built-in digits at
32x32; DeepLabv3-ResNet50 on Cityscapes when prepared, else on the large street scenes).

Each study is the config of its own job (configs/study.py, augshift_study.py,
segmentation_study.py) resized here; ``claims`` holds the thresholds that turn the
measured numbers into the report's verdicts. Writes REPORT.md, results.json (numbers,
versions, device and ``claims``) and the figures in the workdir; a rerun skips finished
experiments and runs, so a killed suite continues where it stopped.
"""

import ml_collections

from configs import augshift_study
from configs import segmentation
from configs import segmentation_study
from configs import study
from gpjax.studies.reproduce import SUITES
DESCRIPTIONS = {
    'micro': 'a minute or two on a CPU: every study at toy size, for the end-to-end tests',
    'quick': '10 to 16 minutes on 2 CPU cores: the built-in data at CPU size',
    'standard': 'about an hour on 2 CPU cores: longer runs where the verdicts need them',
    'paper': "the paper's sizes on a GPU/TPU: CIFAR-10 and Cityscapes when prepared",
}

# Per suite: the location/semantic grid (paddings, seeds, steps), probe orderings, the
# PermuteNet layers of the paper's layer protocol, the orderings PermuteNets are tested with,
# the extra evaluation steps of the curves, the heads trained on the plain image (g=1),
# AugShift lambdas, segmentation training steps and the attack's N (steps None: the
# paper suite keeps its configs' epochs), and the AugShift and segmentation checkpoints kept
# to measure their claims over training (the final one is measured too).
_SIZES = {
    'micro': dict(paddings=('zero',), seeds=1, steps=12, probe_layers=(4, 5), orderings=4,
                  layer_protocol=(4, 5), eval_orderings=4, eval_at=(6,),
                  plain_heads=('gapnet', 'permutenet'), weights=(0.0, 1.0), aug_seeds=1,
                  aug_steps=12, seg_size='tiny', seg_seeds=1, counts=(0, 2, 8, 64), table_count=8,
                  aug_keep_at=(6,), seg_keep_at=(2,)),
    'quick': dict(paddings=('zero', 'none'), seeds=2, steps=200, probe_layers=(1, 2, 3, 4, 5),
                  layer_protocol=(3, 5), eval_orderings=16, eval_at=(25, 50, 100),
                  plain_heads=('gapnet', 'permutenet'), orderings=16, weights=(0.0, 1.0),
                  aug_seeds=2, aug_steps=200, seg_size='cpu', seg_seeds=2, seg_steps=200,
                  counts=(0, 25, 50, 100), table_count=25, aug_keep_at=(50, 100),
                  seg_keep_at=(100,)),
    'standard': dict(paddings=('zero', 'none'), seeds=3, steps=800, probe_layers=(3, 4, 5),
                     layer_protocol=(1, 2, 3, 4, 5), eval_orderings=32,
                     eval_at=(25, 50, 100, 200, 400), plain_heads=('gapnet', 'permutenet'),
                     orderings=64, weights=(0.0, 1.0), aug_seeds=3, aug_steps=600,
                     seg_size='cpu', seg_seeds=2, seg_steps=600, counts=(0, 25, 50, 100),
                     table_count=25, aug_keep_at=(100, 200, 400), seg_keep_at=(100, 200, 400)),
    'paper': dict(paddings=('zero', 'circular', 'reflect', 'replicate', 'partial', 'none'),
                  seeds=3, steps=None, layer_protocol=(1, 2, 3, 4, 5), eval_orderings=64,
                  eval_at=(100, 300), plain_heads=('gapnet', 'permutenet', 'linear'),
                  aug_steps=None, probe_layers=(1, 2, 3, 4, 5), orderings=1024,
                  weights=(0.0, 0.1, 1.0, 10.0), aug_seeds=3, seg_size='gpu', seg_seeds=3,
                  counts=(0, 25, 50, 100, 200, 400), table_count=100, aug_keep_at=(100, 300),
                  seg_keep_at=(3000, 10000)),
}


def _shorten(base: ml_collections.ConfigDict, suite: str, steps: int | None,
             batch_size: int, eval_at: tuple[int, ...]) -> None:
  """Sets a study's training config to the suite's steps and extra evaluations (the
  curves' steps; micro: also toy widths)."""
  base.train.eval_at = eval_at
  if suite != 'paper':
    base.train.steps = steps
    base.train.eval_every = steps
    base.train.log_every = max(steps // 4, 1)
  if suite == 'micro':
    base.model.width = 4
    base.data.image_size = 8  # The digits' own 8x8 scans: 24x24 canvases.
    base.train.batch_size = batch_size
    base.eval.batch_size = 300


def get_config(suite: str = 'quick') -> ml_collections.ConfigDict:
  if suite not in _SIZES:
    raise ValueError(f'suite {suite!r} is not one of {SUITES}.')
  z = _SIZES[suite]
  size = 'gpu' if suite == 'paper' else 'cpu'
  config = ml_collections.ConfigDict()
  config.job = 'reproduce'  # What gpjax.main runs with this config (see gpjax.main.JOBS).
  config.suite = suite  # Name written in the report.
  config.data_dir = ''  # tfds data dir for every study; '' = the tfds default.
  config.classification_data = (  # The first of these prepared in data_dir is used.
      ('cifar10', 'gpjax_digits') if suite == 'paper' else ('gpjax_digits',))
  config.segmentation_data = (  # The same for the segmentation study.
      ('cityscapes', 'gpjax_street/large') if suite == 'paper' else ('gpjax_street',))
  config.cityscapes_crop = 513  # Training crop side (px) when that set is Cityscapes (official).
  config.cityscapes_flip = True  # Random left-right flips when it is Cityscapes (official).
  config.cityscapes_color_jitter = 0.5  # ColorJitter strength when it is Cityscapes (official).
  # Studies per process, the processes running at once, each its studies in order and then
  # the cells of the others' that no process has taken yet: on a CPU host in one process only
  # (elsewhere every study in turn); (('location', 'augshift', 'segmentation'),) runs them in
  # turn everywhere. Segmentation first: its seeds train as one cell, which nobody can share.
  config.study_processes = (('location',), ('segmentation', 'augshift'))

  # Each study's config file and its defaults: the report prints the command of each study
  # as that file with the fields the suite changes.
  variant = ':gpu' if size == 'gpu' else ''
  config.study_files = ml_collections.ConfigDict({
      'location': f'configs/study.py{variant}', 'augshift': f'configs/augshift_study.py{variant}',
      'segmentation': f'configs/segmentation_study.py{variant}'})
  config.study_defaults = ml_collections.ConfigDict({
      'location': study.get_config(size), 'augshift': augshift_study.get_config(size),
      'segmentation': segmentation_study.get_config(size)})

  config.location = study.get_config(size)  # Claims 1-2: GAPNet vs PermuteNet, probes.
  loc = config.location
  loc.study.paddings = z['paddings']
  loc.study.seeds = z['seeds']
  loc.study.probe_layers = z['probe_layers']
  loc.probe.probe.num_orderings = z['orderings']
  loc.study.layer_protocol = z['layer_protocol']
  loc.study.plain_heads = z['plain_heads']
  loc.base.eval.orderings = z['eval_orderings']
  _shorten(loc.base, suite, z['steps'], batch_size=16, eval_at=z['eval_at'])

  config.augshift = augshift_study.get_config(size)  # Claim 3: AugShift vs the baseline.
  aug = config.augshift
  aug.study.sweep_values = z['weights']
  aug.study.seeds = z['aug_seeds']
  # Pairs: 16 canvases.
  _shorten(aug.base, suite, z['aug_steps'], batch_size=8, eval_at=z['eval_at'])
  aug.base.train.keep_at = z['aug_keep_at']
  if suite == 'micro':
    aug.evaluator.invariance.num_pairs = 4
    aug.evaluator.invariance.curve_points = 3
    aug.evaluator.invariance.num_images = 60
    aug.evaluator.invariance.readout_images = 300

  config.segmentation = segmentation_study.get_config(  # Claim 4: ranking and the attack.
      'gpu' if suite == 'paper' else 'cpu')
  seg = config.segmentation
  seg.study.seeds = z['seg_seeds']
  seg.attack.attack.counts = z['counts']
  seg.study.table_count = z['table_count']
  if suite == 'micro':
    with seg.unlocked():
      seg.base = segmentation.get_config('tiny')
    seg.base.model.backbone = 'resnet18'  # 32 channels at width 4; compiles in a third the time.
    seg.attack.attack.random_draws = 2
    seg.attack.probe.num_examples = seg.base.eval.num_examples  # The 16 evaluation images.
  elif suite in ('quick', 'standard'):
    seg.base.train.steps = z['seg_steps']
    seg.attack.attack.random_draws = 3
  seg.base.train.keep_at = z['seg_keep_at']

  config.claims = ml_collections.ConfigDict()  # Thresholds of the verdicts (see REPORT.md).
  config.claims.grid = 3  # Canvas grid whose cells the verdicts read.
  config.claims.gap_location = 0.5  # GAPNet (zero padding) covers this share of chance..100%.
  config.claims.permute_location = 0.2  # Location accuracy GAPNet minus PermuteNet, at least.
  config.claims.permute_semantic = 0.1  # Semantic minus location retention, at least.
  # GAPNet's margin over chance below which a retention is not computed (the study's own).
  config.claims.retention_margin = loc.study.get_ref('retention_margin')
  config.claims.augshift_weight = 1.0  # The lambda judged against lambda 0.
  config.claims.augshift = 0.01  # Consistency gain over the baseline, at least.
  config.claims.overall_attack = 2.0  # Top-N drop over random-N drop (whole image), at least.
  config.claims.min_drop = 0.01  # mIoU drop the attacks must cause to count.
  config.lock()
  return config
