"""PyTorch weight import: a tiny DeepLabv3 in the authors' (VainF) layout gives the same logits
in Flax; a torchvision ResNet-50 starts a segmentation run's backbone with the same features;
files needing code are refused; names and shapes are checked."""

import dataclasses
import os
import types

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

torch = pytest.importorskip('torch')
import torch.nn.functional as F  # noqa: E402
from sklearn.metrics import confusion_matrix as sk_confusion  # noqa: E402
from torch import nn  # noqa: E402

from configs import attack as attack_configs  # noqa: E402
from configs import segmentation as seg_configs  # noqa: E402
from gpjax.core import metrics  # noqa: E402
from gpjax.core import trainer
from gpjax.data import segmentation  # noqa: E402
from gpjax.data.segmentation import SegInfo  # noqa: E402
from gpjax.interop import torch_import  # noqa: E402
from gpjax.probes import attack, runner  # noqa: E402
from gpjax.tasks import segmentation as seg_task  # noqa: E402
from gpjax.errors import ConfigError  # noqa: E402

WIDTH, ASPP_CH, CLASSES = 4, 8, 5


class Bottleneck(nn.Module):
  """torchvision's v1.5 bottleneck: the stride and dilation sit on the 3x3 conv."""

  def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation,
                           bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = downsample

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
  """torchvision ResNet-50 with replace_stride_with_dilation=[False, False, True], no fc."""

  def __init__(self, width):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    self.inplanes, self.dilation = width, 1
    for i, blocks in enumerate((3, 4, 6, 3), start=1):
      stride, dilate = (1 if i == 1 else 2), i == 4
      setattr(self, f'layer{i}', self._make_layer(width * 2**(i - 1), blocks, stride, dilate))

  def _make_layer(self, planes, blocks, stride, dilate):
    previous = self.dilation
    if dilate:
      self.dilation *= stride
      stride = 1
    downsample = None
    if stride != 1 or self.inplanes != planes * 4:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * 4))
    layers = [Bottleneck(self.inplanes, planes, stride, previous, downsample)]
    self.inplanes = planes * 4
    layers += [Bottleneck(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _cbr(cin, cout, k, dilation=1):
  return [nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
          nn.BatchNorm2d(cout), nn.ReLU()]


class ASPP(nn.Module):
  def __init__(self, cin, cout, rates=(6, 12, 18)):
    super().__init__()
    self.convs = nn.ModuleList([nn.Sequential(*_cbr(cin, cout, 1))]
                               + [nn.Sequential(*_cbr(cin, cout, 3, r)) for r in rates]
                               + [nn.Sequential(nn.AdaptiveAvgPool2d(1), *_cbr(cin, cout, 1))])
    self.project = nn.Sequential(*_cbr(5 * cout, cout, 1), nn.Dropout(0.1))

  def forward(self, x):
    out = [c(x) for c in self.convs[:4]]
    out.append(F.interpolate(self.convs[4](x), size=x.shape[-2:], mode='bilinear',
                             align_corners=False))
    return self.project(torch.cat(out, 1))


class Head(nn.Module):  # VainF's DeepLabHead: its Sequential is called `classifier`.
  def __init__(self, cin, aspp, classes):
    super().__init__()
    self.classifier = nn.Sequential(ASPP(cin, aspp), *_cbr(aspp, aspp, 3),
                                    nn.Conv2d(aspp, classes, 1))


class DeepLab(nn.Module):
  def __init__(self, classes=CLASSES):
    super().__init__()
    self.backbone = ResNet50(WIDTH)
    self.classifier = Head(WIDTH * 32, ASPP_CH, classes)

  def forward(self, x, mask=None):
    f = self.backbone(x)
    if mask is not None:
      f = f * mask.view(1, -1, 1, 1)
    y = self.classifier.classifier(f)
    return F.interpolate(y, size=x.shape[-2:], mode='bilinear', align_corners=False)


def _random_bn(model):
  """Non-trivial BatchNorm, so that a wrong mapping cannot hide."""
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.2)
        m.running_mean.normal_(0, 0.2)
        m.running_var.uniform_(0.5, 1.5)
  return model.eval()


@pytest.fixture(scope='module')
def torch_model():
  torch.manual_seed(0)
  return _random_bn(DeepLab())


@pytest.fixture(scope='module')
def checkpoint(torch_model, tmp_path_factory):
  """Saved as VainF does: the weights under 'model_state', plus a numpy best_score."""
  path = tmp_path_factory.mktemp('ckpt') / 'best_deeplabv3_resnet50_os16.pth'
  torch.save({'cur_itrs': 10, 'model_state': torch_model.state_dict(),
              'best_score': np.float64(0.5)}, path)
  return str(path)


def test_imported_logits_match_torch(torch_model, checkpoint):
  state = torch_import.load_state_dict(checkpoint)
  model, variables = torch_import.import_deeplab(state)
  assert (model.num_classes, model.width, model.aspp_features) == (CLASSES, WIDTH, ASPP_CH)
  x = np.random.default_rng(0).normal(size=(2, 3, 48, 80)).astype(np.float32)
  mask = np.ones(WIDTH * 32, np.float32)
  mask[[3, 17, 40]] = 0
  with torch.no_grad():
    ref = torch_model(torch.tensor(x)).permute(0, 2, 3, 1).numpy()
    ref_masked = torch_model(torch.tensor(x), torch.tensor(mask)).permute(0, 2, 3, 1).numpy()
  images = x.transpose(0, 2, 3, 1)
  apply = jax.jit(lambda v, x, m: model.apply(v, x, train=False, channel_mask=m))
  logits, feats = apply(variables, images, np.ones_like(mask))  # One compile for both.
  masked, _ = apply(variables, images, mask)
  assert logits.shape == (2, 48, 80, CLASSES) and feats['stage4'].shape == (2, 3, 5, WIDTH * 32)
  scale = np.abs(ref).max()
  np.testing.assert_allclose(logits, ref, atol=1e-4 * scale, rtol=1e-4)
  np.testing.assert_allclose(masked, ref_masked, atol=1e-4 * scale, rtol=1e-4)
  assert np.abs(ref_masked - ref).max() > 1e-3 * scale  # The mask changed something.


def _save(tmp_path, obj, name='w.pth'):
  path = str(tmp_path / name)
  torch.save(obj, path)
  return path


class Payload:
  def __reduce__(self):
    return (print, ('this would run code',))


def test_file_needing_code_is_refused(torch_model, tmp_path):
  path = _save(tmp_path, {'model_state': torch_model.state_dict(), 'extra': Payload()})
  with pytest.raises(torch_import.UnsafeCheckpointError, match='never runs'):
    torch_import.load_state_dict(path)


def test_file_that_is_no_checkpoint_is_named(torch_model, tmp_path):
  text = tmp_path / 'notes.pth'
  text.write_text('hello\n')
  with pytest.raises(ConfigError) as e:
    torch_import.load_state_dict(str(text))
  assert str(e.value) == (f"config.source.torch_checkpoint={str(text)!r} is not a PyTorch "
                          'checkpoint: torch.save writes a zip archive (or a pickle), and this '
                          'file is neither.')
  legacy = str(tmp_path / 'legacy.pth')  # The pre-1.6 pickle format passes the check.
  torch.save(torch_model.state_dict(), legacy, _use_new_zipfile_serialization=False)
  torch_import.check_checkpoint_file('source.torch_checkpoint', legacy)
  torch_import.check_checkpoint_file('source.torch_checkpoint', _save(tmp_path, {}))


def test_mismatches_are_named(torch_model, tmp_path):
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  model, _ = torch_import.import_deeplab(state)
  wrong = dict(state, **{'classifier.project.0.weight': np.zeros((1,), np.float32)})
  del wrong['backbone.layer2.1.bn2.running_var']
  with pytest.raises(torch_import.CheckpointMismatchError) as e:
    torch_import.convert(wrong, model)
  assert str(e.value) == (
      f'The state dict does not fit a resnet50 DeepLabv3 (width {WIDTH}): missing keys '
      "['backbone.layer2.1.bn2.running_var']; unexpected keys ['classifier.project.0.weight'] "
      '(is it a DeepLabv3, not v3+, checkpoint?).')
  with pytest.raises(torch_import.CheckpointMismatchError, match='shape'):
    torch_import.convert(state, model.clone(num_classes=CLASSES + 1))


def _torchvision_state(deeplab):
  """The backbone of ``deeplab`` as a torchvision ResNet saves it: no prefix, with ``fc``."""
  state = {k[len('backbone.'):]: v for k, v in deeplab.state_dict().items()
           if k.startswith('backbone.')}
  return dict(state, **{'fc.weight': torch.zeros(10, WIDTH * 32), 'fc.bias': torch.zeros(10)})


def test_backbone_import_takes_a_torchvision_resnet(torch_model, checkpoint, tmp_path):
  """Plain torchvision names (fc skipped) or a DeepLabv3 file's backbone: the same variables
  as the full import's backbone, and nothing else."""
  model, full = torch_import.import_deeplab(torch_import.load_state_dict(checkpoint))
  plain = torch_import.load_state_dict(_save(tmp_path, _torchvision_state(torch_model)))
  for state in (plain, torch_import.load_state_dict(checkpoint)):
    got = torch_import.convert_backbone(state, model)
    assert set(got) == {'params', 'batch_stats'}
    assert set(got['params']) == set(got['batch_stats']) == {'backbone'}
    for collection in got:
      want = full[collection]['backbone']
      assert jax.tree.structure(got[collection]['backbone']) == jax.tree.structure(want)
      for a, b in zip(jax.tree.leaves(got[collection]['backbone']), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)


def test_a_backbone_file_with_wrong_keys_names_them(torch_model, tmp_path):
  state = _torchvision_state(torch_model)
  del state['layer3.4.conv2.weight'], state['bn1.running_mean']
  state['layer5.0.conv1.weight'] = torch.zeros(1)
  config = seg_configs.get_config('tiny')
  config.model.width, config.model.aspp_features = WIDTH, ASPP_CH
  config.model.pretrained_backbone = _save(tmp_path, state)
  model = seg_task.create_model(config, CLASSES)
  with pytest.raises(torch_import.CheckpointMismatchError) as e:
    seg_task.pretrained_weights(config, model)
  assert str(e.value) == (
      f'The state dict does not fit a resnet50 backbone (width {WIDTH}): missing keys '
      "['bn1.running_mean', 'layer3.4.conv2.weight']; unexpected keys "
      "['layer5.0.conv1.weight'].")
  with open(config.model.pretrained_backbone, 'w') as f:
    f.write('not a checkpoint')
  with pytest.raises(ConfigError, match=r"^config.model.pretrained_backbone='.*' is not a "):
    seg_task.pretrained_weights(config, model)


def test_the_config_check_reads_a_pretrained_backbone_before_any_work(tmp_path):
  """An unsafe or mismatched backbone file is refused by `check`, before data or training."""
  config = seg_configs.get_config('gpu')  # Width 64, as a torchvision ResNet.
  config.model.pretrained_backbone = _save(tmp_path, {'conv1.weight': torch.zeros(1),
                                                      'extra': Payload()}, 'unsafe.pth')
  with pytest.raises(torch_import.UnsafeCheckpointError, match='never runs'):
    seg_task.check(config)
  config.model.pretrained_backbone = _save(tmp_path, {'foo.weight': torch.zeros(3)})
  with pytest.raises(torch_import.CheckpointMismatchError, match=r"unexpected keys \['foo"):
    seg_task.check(config)


class _Scenes:
  def __len__(self):
    return 4


def test_pretrained_backbone_starts_the_segmentation_run(tmp_path, monkeypatch):
  """A torchvision ResNet-50 (width 64, random weights and running statistics) saved with
  torch.save, given as model.pretrained_backbone: the run's first TrainState holds its
  weights, and its backbone computes the PyTorch features (eval mode)."""
  torch.manual_seed(2)
  resnet = _random_bn(ResNet50(64))
  resnet.fc = nn.Linear(2048, 1000)  # As torchvision's: in the file, not in the model.
  path = _save(tmp_path, resnet.state_dict(), 'resnet50-random.pth')
  config = seg_configs.get_config('tiny')
  config.model.width, config.model.aspp_features = 64, 8
  config.model.pretrained_backbone = path
  seg_task.check(config)
  info = SegInfo(name='s', num_classes=3, class_names=('a', 'b', 'c'), image_shape=(32, 32, 3),
                 num_train=4, num_eval=4, eval_split='test')
  monkeypatch.setattr(seg_task, 'TASK', dataclasses.replace(
      seg_task.TASK, load_data=lambda config: (_Scenes(), _Scenes(), info)))
  started = []

  def run(workdir, state, **kwargs):  # The training loop: only the state it is given.
    started.append(state)
    return types.SimpleNamespace(preempted_at_step=0)

  monkeypatch.setattr(trainer.loop, 'run', run)
  assert seg_task.train_and_evaluate(config, str(tmp_path / 'run')) == {'preempted_at_step': 0}
  state, = started
  want = torch_import.convert_backbone(torch_import.load_state_dict(path),
                                       seg_task.create_model(config, 3))
  for collection in ('params', 'batch_stats'):
    ours = getattr(state, collection)['backbone']
    assert jax.tree.structure(ours) == jax.tree.structure(want[collection]['backbone'])
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(want[collection]['backbone'])):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(state.batch_stats['backbone']['stem']['bn']['var'],
                                resnet.bn1.running_var.numpy())
  model = seg_task.create_model(config, 3, axis_name=None)
  x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
  with torch.no_grad():
    ref = resnet(torch.tensor(x)).permute(0, 2, 3, 1).numpy()
  _, feats = jax.jit(lambda v, x: model.apply(v, x, train=False))(
      {'params': state.params, 'batch_stats': state.batch_stats}, x.transpose(0, 2, 3, 1))
  assert feats['stage4'].shape == ref.shape == (2, 2, 2, 2048)
  scale = np.abs(ref).max()
  assert scale > 0.1
  np.testing.assert_allclose(feats['stage4'], ref, atol=1e-4 * scale, rtol=1e-4)


def test_attack_job_on_an_imported_checkpoint(tmp_path):
  """configs/attack.py:imported on (mocked) Cityscapes: the clean mIoU is the PyTorch model's."""
  torch.manual_seed(1)
  model = DeepLab(classes=19).eval()
  config = attack_configs.get_config('imported')
  config.source.torch_checkpoint = _save(tmp_path, {'model_state': model.state_dict()})
  config.data.image_height, config.data.image_width = 32, 64
  config.probe.num_examples = 2
  config.attack.counts = (0, 10)
  config.attack.random_draws = 1
  with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
    results = runner.run_probe(attack.PROBE, config, str(tmp_path / 'out'))
    source, info = segmentation.load_segmentation('cityscapes', 'eval', image_size=(32, 64))
    batch = source.read([0, 1])
  assert results['num_channels'] == WIDTH * 32 and results['counts'] == [0, 10]
  assert os.path.isfile(tmp_path / 'out' / 'curves.png')
  x = (batch['image'] / 255.0 - np.array(info.mean)) / np.array(info.std)
  with torch.no_grad():
    preds = model(torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2)).argmax(1).numpy()
  keep = batch['label'].reshape(-1) != 255
  conf = sk_confusion(batch['label'].reshape(-1)[keep], preds.reshape(-1)[keep], labels=range(19))
  assert results['clean']['whole'] == pytest.approx(metrics.mean_iou(conf), abs=1e-6)
