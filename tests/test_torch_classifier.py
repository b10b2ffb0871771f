"""Official GAPNet / PermuteNet checkpoints into `Classifier`: logits equal PyTorch's."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import micro
from gpjax.core import writers
from gpjax.data import batching, examples
from gpjax.interop import torch_classifier, torch_import
from gpjax.models import PADDINGS
from gpjax.tasks import classification
from gpjax.tasks import imported
from gpjax.errors import ConfigError

torch = pytest.importorskip('torch')
F = torch.nn.functional

WIDTH, CLASSES = 8, 9


def _official_state(head: str, seed: int = 0, classes: int = CLASSES) -> dict:
  """Random weights (and BatchNorm statistics) under the official ResNet-18 names."""
  g = torch.Generator().manual_seed(seed)
  state = {}

  def conv(name, cout, cin, k, bias=False):
    state[f'{name}.weight'] = torch.randn(cout, cin, k, k, generator=g) / (cin * k * k) ** 0.5
    if bias:
      state[f'{name}.bias'] = 0.1 * torch.randn(cout, generator=g)

  def bn(name, c):
    state[f'{name}.weight'] = 1 + 0.1 * torch.randn(c, generator=g)
    state[f'{name}.bias'] = 0.1 * torch.randn(c, generator=g)
    state[f'{name}.running_mean'] = 0.1 * torch.randn(c, generator=g)
    state[f'{name}.running_var'] = 0.5 + torch.rand(c, generator=g)
    state[f'{name}.num_batches_tracked'] = torch.tensor(100)

  conv('conv1', WIDTH, 3, 7)
  bn('bn1', WIDTH)
  cin = WIDTH
  for i in range(1, 5):
    cout = WIDTH * 2 ** (i - 1)
    for j in range(2):
      p = f'layer{i}.{j}'
      conv(f'{p}.conv1', cout, cin, 3)
      bn(f'{p}.bn1', cout)
      conv(f'{p}.conv2', cout, cout, 3)
      bn(f'{p}.bn2', cout)
      if i > 1 and j == 0:
        conv(f'{p}.shortcut.0', cout, cin, 1)
        bn(f'{p}.shortcut.1', cout)
      cin = cout
  if head == 'gapnet':
    conv('pre_classifier', classes, cin, 3, bias=True)
  # ResNet18PositionGAP defines linear_location too (unused in its forward).
  state['linear_location.weight'] = torch.randn(classes, cin, generator=g) / cin ** 0.5
  state['linear_location.bias'] = 0.1 * torch.randn(classes, generator=g)
  return state


def _official_forward(state, x, padding, torch_conv, ordering=None):
  """The official ResNet18GAPNet / ResNet18PermuteNet forward (eval mode), x (N, 3, H, W)."""
  def bn(name, y):
    return F.batch_norm(y, state[f'{name}.running_mean'], state[f'{name}.running_var'],
                        state[f'{name}.weight'], state[f'{name}.bias'], False, eps=1e-5)

  y = F.relu(bn('bn1', torch_conv(x, state['conv1.weight'], None, 2, padding)))
  for i in range(1, 5):
    for j in range(2):
      p, stride = f'layer{i}.{j}', 2 if i > 1 and j == 0 else 1
      out = F.relu(bn(f'{p}.bn1', torch_conv(y, state[f'{p}.conv1.weight'], None, stride,
                                             padding)))
      out = bn(f'{p}.bn2', torch_conv(out, state[f'{p}.conv2.weight'], None, 1, padding))
      if f'{p}.shortcut.0.weight' in state:
        y = bn(f'{p}.shortcut.1', F.conv2d(y, state[f'{p}.shortcut.0.weight'], None, stride))
      y = F.relu(out + y)
  if 'pre_classifier.weight' in state:
    y = torch_conv(y, state['pre_classifier.weight'], state['pre_classifier.bias'], 1, padding)
    return y.mean(dim=(2, 3))
  pooled = y.mean(dim=(2, 3))
  if ordering is not None:
    pooled = pooled[:, torch.tensor(np.array(ordering), dtype=torch.long)]
  return F.linear(pooled, state['linear_location.weight'], state['linear_location.bias'])


def _save(tmp_path, state, name='official.pth'):
  """As the official scripts save under DataParallel: {'net': {'module.' + name: ...}, ...}."""
  path = tmp_path / name
  torch.save({'net': {f'module.{k}': v for k, v in state.items()}, 'acc': 97.5, 'epoch': 19},
             path)
  return str(path)


@pytest.mark.parametrize('head', ['gapnet', 'permutenet'])
@pytest.mark.parametrize('padding', PADDINGS)
def test_official_checkpoint_imports_with_equal_logits(tmp_path, torch_conv, head, padding):
  official = _official_state(head)
  state = torch_import.load_state_dict(_save(tmp_path, official))
  model, variables = torch_classifier.import_classifier(state, padding=padding)
  assert (model.head, model.width, model.num_classes) == (head, WIDTH, CLASSES)
  x = np.asarray(jax.random.normal(jax.random.key(1), (2, 48, 48, 3)))
  ordering = None if head == 'gapnet' else np.asarray(
      jax.random.permutation(jax.random.key(2), 8 * WIDTH))
  ours, _ = model.apply(variables, jnp.asarray(x), train=False,
                        ordering=None if ordering is None else jnp.asarray(ordering))
  theirs = _official_forward(official, torch.tensor(x).permute(0, 3, 1, 2), padding, torch_conv,
                             ordering)
  np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=1e-4, rtol=1e-4)
  assert np.abs(theirs.numpy()).max() > 0.1  # Logits of a real size, not all near zero.


def test_missing_and_unexpected_keys_are_named(tmp_path):
  state = _official_state('permutenet')
  del state['layer3.1.bn2.running_var']
  state['layer5.0.conv1.weight'] = torch.zeros(1)
  loaded = torch_import.load_state_dict(_save(tmp_path, state))
  with pytest.raises(torch_import.CheckpointMismatchError) as e:
    torch_classifier.import_classifier(loaded, padding='zero')
  assert "missing keys ['layer3.1.bn2.running_var']" in str(e.value)
  assert "unexpected keys ['layer5.0.conv1.weight']" in str(e.value)


def test_a_wrong_shape_names_the_key_and_both_shapes(tmp_path):
  state = _official_state('gapnet')
  state['pre_classifier.bias'] = torch.zeros(CLASSES + 1)
  loaded = torch_import.load_state_dict(_save(tmp_path, state))
  with pytest.raises(torch_import.CheckpointMismatchError,
                     match=r'pre_classifier.bias: the model needs shape \(9,\).*gives \(10,\)'):
    torch_classifier.import_classifier(loaded, padding='zero')


def test_a_file_without_a_resnet_is_refused(tmp_path):
  path = tmp_path / 'other.pth'
  torch.save({'net': {'fc.weight': torch.zeros(2, 2)}, 'acc': 1.0}, path)
  with pytest.raises(torch_import.CheckpointMismatchError, match='Not an official ResNet'):
    torch_classifier.import_classifier(torch_import.load_state_dict(str(path)), padding='zero')


@pytest.mark.parametrize('head', ['gapnet', 'permutenet'])
def test_evaluate_torch_job_scores_the_official_model_on_our_test_canvases(
    tmp_path, torch_conv, data_dir, head):
  """The job's accuracy equals the official forward's on the same test canvases (a
  PermuteNet's with the identity ordering)."""
  config = micro.get_config()
  grid = config.data.grid
  path = _save(tmp_path, _official_state(head, seed=3, classes=grid ** 2))
  with config.unlocked():
    config.job, config.data.data_dir, config.model.head = 'evaluate_torch', data_dir, head
    config.source = ml_collections.ConfigDict({'torch_checkpoint': path})
  results = imported.evaluate_torch(config, str(tmp_path / 'out'))
  assert writers.read_json(str(tmp_path / 'out' / 'results.json'))['test_accuracy'] == \
      results['test_accuracy']
  _, test_src, info = classification.load_data(config)
  official = _official_state(head, seed=3, classes=grid ** 2)
  correct = count = 0
  for batch in batching.eval_batches(test_src, 500):
    images, labels, _ = examples.eval_examples(batch, config, info)
    logits = _official_forward(official, torch.tensor(np.asarray(images)).permute(0, 3, 1, 2),
                               config.model.padding, torch_conv)
    keep = np.asarray(batch['mask'])
    correct += int((logits.argmax(1).numpy() == np.asarray(labels))[keep].sum())
    count += int(keep.sum())
  assert count == len(test_src) and results['num_classes'] == grid ** 2
  # A PermuteNet is tested under random orderings, as the official test does; its identity
  # ordering is the official forward without shuffling.
  key = 'test_accuracy_identity' if head == 'permutenet' else 'test_accuracy'
  assert results[key] == pytest.approx(correct / count, abs=1e-6)
  assert ('test_accuracy_orderings' in results) == (head == 'permutenet')
  assert len(results['per_location_accuracy']) == grid ** 2


def test_evaluate_torch_refuses_a_file_with_the_wrong_number_of_outputs(tmp_path, data_dir):
  config = micro.get_config()
  path = _save(tmp_path, _official_state('gapnet', classes=config.data.grid ** 2 + 1))
  with config.unlocked():
    config.job, config.data.data_dir = 'evaluate_torch', data_dir
    config.source = ml_collections.ConfigDict({'torch_checkpoint': path})
  with pytest.raises(ConfigError, match=r'has 5 outputs; config.task=.location. .* needs 4'):
    imported.evaluate_torch(config, str(tmp_path / 'out'))
