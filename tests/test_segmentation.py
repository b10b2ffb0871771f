"""Tests for gpjax.tasks.segmentation: what the task gives the core (shapes, evaluation
batches, the mIoU summary, the results entries) and its config check."""

import numpy as np
import pytest

from configs import segmentation as seg_config
from gpjax.errors import ConfigError
from gpjax.data.segmentation import SegInfo
from gpjax.tasks import segmentation

INFO = SegInfo(name='s', num_classes=3, class_names=('a', 'b', 'c'), image_shape=(8, 10, 3),
               num_train=10, num_eval=5, eval_split='test')


class _Masks:
  def __len__(self):
    return 5

  def read(self, indices):
    idx = np.asarray(indices).reshape(-1)
    return {'image': np.stack([np.full((8, 10, 3), i, np.uint8) for i in idx]),
            'label': np.stack([np.full((8, 10), i % 3, np.uint8) for i in idx])}


def test_input_shape_is_the_crop_or_the_examples():
  config = seg_config.get_config('tiny')
  assert segmentation.input_shape(config, INFO) == (8, 10, 3)
  config.data.crop_height, config.data.crop_width = 4, 6
  assert segmentation.input_shape(config, INFO) == (4, 6, 3)
  assert segmentation.num_classes(config, INFO) == 3
  assert (segmentation.TASK.metric, segmentation.description(config)) == ('test_miou', 'segment')


def test_eval_batches_stop_at_num_examples_and_pad_with_ignore():
  config = seg_config.get_config('tiny')
  config.eval.batch_size, config.eval.num_examples = 2, 3
  batches = list(segmentation.eval_batches(_Masks(), config))
  assert [b['index'].tolist() for b in batches] == [[0, 1], [2, 3]]
  assert [b['mask'].tolist() for b in batches] == [[True, True], [True, False]]
  assert (batches[1]['label'][1] == 255).all() and (batches[1]['image'][1] == 0).all()
  np.testing.assert_array_equal(batches[1]['label'][0], np.full((8, 10), 2))
  config.eval.num_examples = 0
  assert sum(int(b['mask'].sum()) for b in segmentation.eval_batches(_Masks(), config)) == 5


def test_summary_and_results():
  conf = np.array([[4, 1, 0], [0, 3, 1], [0, 0, 0]])
  out = segmentation.summarize(conf, INFO)
  assert out['test_pixel_accuracy'] == pytest.approx(7 / 9)
  assert out['iou_per_class']['a'] == pytest.approx(4 / 5)
  assert out['iou_per_class']['b'] == pytest.approx(3 / 5)
  assert out['confusion'] == conf.tolist()
  final = {**out, 'step': 6}
  best = {'test_miou': 0.9, 'step': 3}
  config = seg_config.get_config('tiny')
  got = segmentation.results(config, final, best, INFO)
  assert got == {'class_names': ['a', 'b', 'c'], 'backbone_init': 'scratch', 'steps': 6,
                 'test_miou': out['test_miou'], 'test_pixel_accuracy': 7 / 9,
                 'iou_per_class': out['iou_per_class'], 'best_test_miou': 0.9, 'best_step': 3}
  config.model.pretrained_backbone = 'weights/resnet50-0676ba61.pth'
  assert segmentation.results(config, final, best, INFO)['backbone_init'] == (
      'pretrained: weights/resnet50-0676ba61.pth')


def test_validate_config_names_the_field():
  config = seg_config.get_config('tiny')
  segmentation.check(config)
  config.data.crop_height = 4
  with pytest.raises(ConfigError, match='crop_height and crop_width'):
    segmentation.check(config)
  config = seg_config.get_config('tiny')
  config.train.schedule = 'cosine'
  with pytest.raises(ConfigError, match='train.schedule'):
    segmentation.check(config)


def test_official_recipe_fields_reach_the_model():
  """gpu (the paper's protocol): backbone BatchNorm momentum 0.01 in PyTorch terms; the
  others keep 0.9 (PyTorch's default 0.1). Colour jitter is off on the built-in scenes."""
  gpu, cpu = seg_config.get_config('gpu'), seg_config.get_config('cpu')
  assert segmentation.create_model(gpu, 19).backbone_bn_momentum == 0.99
  assert segmentation.create_model(cpu, 8).backbone_bn_momentum == 0.9
  assert gpu.data.color_jitter == cpu.data.color_jitter == 0.0
  assert gpu.model.pretrained_backbone == ''


def test_bad_pretrained_backbone_jitter_and_momentum_are_named(tmp_path):
  def error(**fields):
    config = seg_config.get_config('gpu')
    for name, value in fields.items():
      section, field = name.split('__')
      config[section][field] = value
    with pytest.raises(ConfigError) as e:
      segmentation.check(config)
    return str(e.value)

  missing = str(tmp_path / 'resnet50.pth')
  assert error(model__pretrained_backbone=missing) == (
      f'config.model.pretrained_backbone={missing!r} is not a file: give a torchvision ResNet '
      "state dict (.pth), or '' to train from scratch.")
  text = tmp_path / 'notes.pth'
  text.write_text('hello\n')
  assert error(model__pretrained_backbone=str(text)) == (
      f'config.model.pretrained_backbone={str(text)!r} is not a PyTorch checkpoint: torch.save '
      'writes a zip archive (or a pickle), and this file is neither.')
  assert error(model__pretrained_backbone=str(text), model__width=8) == (
      'config.model.width=8 is not allowed with config.model.pretrained_backbone: a '
      'torchvision ResNet has width 64.')
  assert error(data__color_jitter=-0.5) == (
      'config.data.color_jitter=-0.5 is not allowed; it must be a float >= 0.0.')
  assert error(model__backbone_bn_momentum=1.0) == (
      'config.model.backbone_bn_momentum=1.0 is not allowed; it must be in [0, 1).')
