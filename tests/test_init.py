"""`model.init='pytorch'`: the official models' PyTorch 1.x default initialisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpjax.models import Classifier
from gpjax.models.init import check_init
from gpjax.models.padding import PaddedConv

torch = pytest.importorskip('torch')
tnn = torch.nn


class _Block(tnn.Module):
  """The official BasicBlock (convs without bias, 1x1 projection shortcut)."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = tnn.BatchNorm2d(cout)
    self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = tnn.BatchNorm2d(cout)
    if stride != 1 or cin != cout:
      self.shortcut = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                     tnn.BatchNorm2d(cout))


class _OfficialResNet18(tnn.Module):
  """The official ResNet18PositionGAP / PositionShuffle layout (7x7 stem, no max-pool),
  parameters only: this test reads the initial weights, it never runs the network."""

  def __init__(self, num_classes, head):
    super().__init__()
    self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = tnn.BatchNorm2d(64)
    cin = 64
    for i, cout in enumerate((64, 128, 256, 512), start=1):
      stride = 1 if i == 1 else 2
      setattr(self, f'layer{i}', tnn.Sequential(_Block(cin, cout, stride), _Block(cout, cout, 1)))
      cin = cout
    if head == 'gapnet':
      self.pre_classifier = tnn.Conv2d(512, num_classes, 3, padding=1)
    else:
      self.linear_location = tnn.Linear(512, num_classes)


def _flax_path(torch_name: str) -> tuple[str, ...]:
  """The gpjax parameter of an official layer, e.g. 'layer2.0.shortcut.0.weight'."""
  parts = torch_name.split('.')
  if parts[0] == 'conv1':
    return ('backbone', 'stem', 'conv', 'conv', 'kernel')
  if parts[0] in ('pre_classifier', 'linear_location'):
    leaf = 'kernel' if parts[1] == 'weight' else 'bias'
    return ('head', 'conv', leaf) if parts[0] == 'pre_classifier' else ('head', leaf)
  stage, block, conv = int(parts[0][5:]), int(parts[1]) + 1, parts[2]
  return ('backbone', f'stage{stage}_block{block}', conv, 'conv', 'conv', 'kernel')


def _params(head: str, init: str, seed: int = 0):
  model = Classifier(num_classes=9, head=head, padding='zero', width=64, param_init=init)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(
      jax.random.key(seed))
  return jax.device_get(variables['params'])


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return np.asarray(tree)


@pytest.mark.parametrize('head', ['gapnet', 'permutenet'])
def test_pytorch_init_matches_the_official_models_layer_by_layer(head):
  torch.manual_seed(0)
  official = _OfficialResNet18(9, head)
  params = _params(head, 'pytorch')
  checked, fan_in = 0, None
  for name, weight in official.named_parameters():
    if '.bn' in name or name.startswith('bn') or 'shortcut.1' in name:
      continue  # BatchNorm: scale 1, bias 0 in both (checked below).
    ours, theirs = _get(params, _flax_path(name)), weight.detach().numpy()
    assert ours.size == theirs.size, name
    if name.endswith('weight'):
      fan_in = theirs.size // theirs.shape[0]  # A bias follows its layer's weight.
    bound = 1 / np.sqrt(fan_in)
    assert np.abs(theirs).max() <= bound * (1 + 1e-6), name
    assert np.abs(ours).max() <= bound * (1 + 1e-6), name
    if theirs.size >= 4096:
      assert ours.std() == pytest.approx(theirs.std(), rel=0.05), name
    checked += 1
  assert checked == 22  # 20 convs, the head's kernel and bias.
  bn = params['backbone']['stage3_block1']['conv1']['bn']
  np.testing.assert_array_equal(bn['scale'], 1.0)
  np.testing.assert_array_equal(bn['bias'], 0.0)


def test_pytorch_and_flax_schemes_differ_as_documented():
  pytorch, flax_init = _params('permutenet', 'pytorch'), _params('permutenet', 'flax')
  bias = pytorch['head']['bias']
  assert 0 < np.abs(bias).max() <= 1 / np.sqrt(512)
  np.testing.assert_array_equal(flax_init['head']['bias'], 0.0)
  # The stem (7x7x3 -> 64): He-normal over fan_out vs PyTorch's U(+-1/sqrt(fan_in)).
  stem = ('backbone', 'stem', 'conv', 'conv', 'kernel')
  assert _get(flax_init, stem).std() == pytest.approx(np.sqrt(2 / (49 * 64)), rel=0.05)
  assert _get(pytorch, stem).std() == pytest.approx(1 / np.sqrt(3 * 49 * 3), rel=0.05)


def test_partial_conv_bias_uses_the_pytorch_bound():
  conv = PaddedConv(16, 3, padding='partial', use_bias=True, param_init='pytorch')
  params = conv.init(jax.random.key(1), jnp.zeros((1, 8, 8, 4)))['params']
  bound = 1 / np.sqrt(4 * 9)
  assert 0.5 * bound < np.abs(params['bias']).max() <= bound


def test_unknown_init_names_the_choices():
  with pytest.raises(ValueError, match=r"init='kaiming' is not supported; choose one of "
                                       r"\('flax', 'pytorch'\)"):
    check_init('kaiming')
