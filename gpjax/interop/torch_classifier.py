r"""Imports the official classifier checkpoints (GAPNet / PermuteNet ResNets) into `Classifier`.

The official training scripts save ``{'net': state_dict, 'acc': ..., 'epoch': ...}``
(``resnet18_location_GAP_zero_gridsize_3.pth``), with a ``module.`` prefix when trained
under DataParallel, and names ``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``,
``layer1.0.shortcut.{0,1}.*``, then ``pre_classifier.*`` (GAPNet's 3x3 class-map conv) or
``linear_location.*`` (the Dense head of PermuteNet and of the padding-variant GAP models).
GAPNet files also hold a ``linear_location`` that the official forward never uses; it is
skipped. A state dict does not say which padding its model used: pass it (the file names
say it, e.g. ``_zero_``). Files are read by `torch_import.load_state_dict` (weights only).

Usage::

  state = torch_import.load_state_dict('resnet18_location_GAP_zero_gridsize_3.pth')
  model, variables = torch_classifier.import_classifier(state, padding='zero')
"""

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gpjax.interop.torch_import import CheckpointMismatchError, StateDict
from gpjax.models import Classifier

Variables = dict[str, Any]

_BACKBONES = {((2, 2, 2, 2), False): 'resnet18', ((3, 4, 6, 3), False): 'resnet34',
              ((3, 4, 6, 3), True): 'resnet50'}
_BN = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}
_GAPNET_UNUSED = ('linear_location.weight', 'linear_location.bias')


def infer_config(state: StateDict) -> dict[str, Any]:
  """``{'backbone', 'head', 'width', 'num_classes'}`` read from the names and shapes."""
  blocks = tuple(len({k.split('.')[1] for k in state if k.startswith(f'layer{i}.')})
                 for i in range(1, 5))
  bottleneck = 'layer1.0.conv3.weight' in state
  backbone = _BACKBONES.get((blocks, bottleneck))
  if backbone is None or 'conv1.weight' not in state:
    raise CheckpointMismatchError(
        f'Not an official ResNet classifier: blocks per stage {blocks} '
        f'({"bottleneck" if bottleneck else "basic"}); expected conv1.weight and '
        f'layer1..layer4 of a ResNet-18/34/50.')
  if 'pre_classifier.weight' in state:
    head, classes = 'gapnet', state['pre_classifier.weight'].shape[0]
  elif 'linear_location.weight' in state:
    head, classes = 'permutenet', state['linear_location.weight'].shape[0]
  else:
    raise CheckpointMismatchError('No classifier head: expected pre_classifier.weight (GAPNet) '
                                  'or linear_location.weight (PermuteNet / GAP + Dense).')
  return {'backbone': backbone, 'head': head, 'width': int(state['conv1.weight'].shape[0]),
          'num_classes': int(classes)}


def torch_name(path: tuple[str, ...], head: str) -> str:
  """The official name of one of our variables, e.g. ('backbone', 'stage2_block1',
  'shortcut', 'conv', 'conv', 'kernel') -> 'layer2.0.shortcut.0.weight'."""
  leaf = path[-1]
  if path[0] == 'head':  # GAPNet: head/conv/{kernel,bias} (partial: head/bias); Dense: head/*.
    return f'{"pre_classifier" if head == "gapnet" else "linear_location"}.' \
           f'{"weight" if leaf == "kernel" else "bias"}'
  is_bn = path[-2] == 'bn'
  if path[1] == 'stem':
    return f'bn1.{_BN[leaf]}' if is_bn else 'conv1.weight'
  stage, index = re.fullmatch(r'stage(\d)_block(\d+)', path[1]).groups()
  prefix = f'layer{stage}.{int(index) - 1}.'
  if path[2] == 'shortcut':
    return prefix + (f'shortcut.1.{_BN[leaf]}' if is_bn else 'shortcut.0.weight')
  k = path[2][len('conv'):]
  return prefix + (f'bn{k}.{_BN[leaf]}' if is_bn else f'conv{k}.weight')


def convert(state: StateDict, model: Classifier) -> Variables:
  """``{'params', 'batch_stats'}`` of ``model`` from an official state dict.

  Raises:
    CheckpointMismatchError: naming the names the model needs that the file lacks, the
      names the file holds that the model has no place for, or a shape that differs.
  """
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  target = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
  wanted = {}
  for collection in ('params', 'batch_stats'):
    for path, leaf in jax.tree_util.tree_leaves_with_path(target[collection]):
      keys = tuple(str(p.key) for p in path)
      wanted[torch_name(keys, model.head)] = (collection, keys, leaf.shape)
  skipped = set(_GAPNET_UNUSED) if model.head == 'gapnet' else set()
  present = {k for k in state if not k.endswith('num_batches_tracked')} - skipped
  missing, unexpected = sorted(set(wanted) - present), sorted(present - set(wanted))
  if missing or unexpected:
    raise CheckpointMismatchError(
        f'The state dict does not fit a {model.backbone} {model.head} (width {model.width}): '
        f'missing keys {missing or "none"}; unexpected keys {unexpected or "none"}.')
  variables = {'params': {}, 'batch_stats': {}}
  for name, (collection, keys, shape) in wanted.items():
    value = np.asarray(state[name], np.float32)
    if value.ndim == 4:  # PyTorch conv (O, I, kh, kw) -> Flax (kh, kw, I, O).
      value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 2:  # Linear (O, I) -> Dense (I, O).
      value = value.T
    if value.shape != tuple(shape):
      raise CheckpointMismatchError(f'{name}: the model needs shape {tuple(shape)} (as '
                                    f'{collection}/{"/".join(keys)}), the file gives '
                                    f'{value.shape}.')
    tree = variables[collection]
    for key in keys[:-1]:
      tree = tree.setdefault(key, {})
    tree[keys[-1]] = value
  return variables


def import_classifier(state: StateDict, *, padding: str, **overrides: Any
                      ) -> tuple[Classifier, Variables]:
  """A Classifier shaped like the official state dict, with ``padding``, and its variables.

  Args:
    state: from `torch_import.load_state_dict`.
    padding: the border treatment the official model was trained with.
    **overrides: Classifier attributes, e.g. ``head='linear'`` or ``dtype=jnp.bfloat16``.
  """
  model = Classifier(**{**infer_config(state), 'padding': padding, **overrides})
  return model, convert(state, model)
