r"""Imports PyTorch ResNet / DeepLabv3 weights into `gpjax.models.deeplab.DeepLabV3` variables.

Reads checkpoints in the layout of VainF/DeepLabV3Plus-Pytorch (which the
authors' released Cityscapes model ``best_deeplabv3_resnet50_cityscapes_os16.pth``
uses: a dict whose ``model_state`` holds ``backbone.conv1.weight``,
``backbone.layer1.0.conv1.weight``, ..., ``classifier.classifier.0.convs.0.0.weight``),
torchvision's ``deeplabv3_resnet50`` (``classifier.0.convs...``; ``aux_classifier``
is skipped) and plain state dicts, with or without a ``module.`` prefix
(DataParallel). A torchvision ResNet state dict (``conv1.weight``,
``layer1.0.conv1.weight``, ...) gives the backbone only (`convert_backbone`), e.g.
ImageNet weights to start a training run from (``config.model.pretrained_backbone``).

Files are read with ``torch.load(..., weights_only=True)``: tensors, numbers and
containers only, never code. Numpy scalars (VainF stores ``best_score`` as
``np.float64``) are the one addition allowed. A file that needs any other class
is refused with `UnsafeCheckpointError`. torch (a CPU build is enough) is needed
only here, imported on use.

Usage::

  from gpjax.interop import torch_import
  state = torch_import.load_state_dict('best_deeplabv3_resnet50_cityscapes_os16.pth')
  model, variables = torch_import.import_deeplab(state)   # num_classes etc. read from shapes
  logits, feats = model.apply(variables, images, train=False)  # images (N, H, W, 3), normalised

or, in a job, ``--config.source.torch_checkpoint=PATH`` (configs/attack.py:imported).
"""

import pickle
import re
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gpjax.models.deeplab import DeepLabV3
from gpjax.errors import ConfigError

StateDict = dict[str, np.ndarray]
Variables = dict[str, Any]

_HEAD_PREFIXES = ('classifier.classifier.', 'classifier.')  # VainF, torchvision.
_SKIPPED = ('num_batches_tracked', 'aux_classifier.', 'fc.')  # Not part of our model.


class UnsafeCheckpointError(ValueError):
  """The file needs code (a pickled class or function) to load: refused."""


class CheckpointMismatchError(ValueError):
  """The state dict's names or shapes do not fit the model."""


def check_checkpoint_file(field: str, path: str) -> None:
  """Raises ConfigError unless ``path`` (``config.<field>``) looks like a ``torch.save`` file.

  Reads only the first bytes: torch.save writes a zip archive, or (before torch 1.6, and with
  ``_use_new_zipfile_serialization=False``) a pickle, which starts with the PROTO opcode 0x80.
  """
  with open(path, 'rb') as f:
    head = f.read(1)
  if head != b'\x80' and not zipfile.is_zipfile(path):
    raise ConfigError(f'config.{field}={path!r} is not a PyTorch checkpoint: torch.save writes a '
                      'zip archive (or a pickle), and this file is neither.')


def _numpy_scalar_globals() -> list[Any]:
  """Constructors of numpy scalars and dtypes: they build numbers, run no user code."""
  from numpy._core import multiarray
  dtypes = [getattr(np.dtypes, f'{kind}DType') for kind in (
      'Bool', 'Int8', 'Int16', 'Int32', 'Int64', 'UInt8', 'UInt16', 'UInt32', 'UInt64',
      'Float16', 'Float32', 'Float64')]
  # Files written under numpy 1 name the scalar constructor numpy.core.multiarray.scalar.
  return [multiarray.scalar, (multiarray.scalar, 'numpy.core.multiarray.scalar'), np.dtype,
          *dtypes]


def load_state_dict(path: str, field: str = 'source.torch_checkpoint') -> StateDict:
  """Reads a PyTorch checkpoint's weights as float32 numpy arrays.

  Args:
    path: a ``.pth``/``.pt`` file: a state dict, or a dict holding one under
      ``model_state``, ``state_dict``, ``model`` or ``net``.
    field: the config field that named ``path``, for the error of a file that is no
      checkpoint.

  Returns:
    ``{name: array}`` with any ``module.`` prefix removed.

  Raises:
    ConfigError: the file is not a torch.save file at all.
    UnsafeCheckpointError: the file holds pickled code (weights_only refused it).
    ImportError: torch is not installed.
  """
  try:
    import torch
  except ImportError as e:
    raise ImportError('Reading a PyTorch checkpoint needs torch (a CPU build is enough): '
                      'pip install torch --index-url https://download.pytorch.org/whl/cpu') from e
  check_checkpoint_file(field, path)
  try:
    with torch.serialization.safe_globals(_numpy_scalar_globals()):
      obj = torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    found = re.search(r'(GLOBAL [\w.]+|got <class [^>]+>)', str(e))
    raise UnsafeCheckpointError(
        f'{path} was refused: loading it needs code that is not plain tensors or numbers '
        f'({found.group(1) if found else "a pickled object"}), and this loader never runs '
        'code from a file (torch.load weights_only=True). Re-save only the weights where you '
        'trust the file: torch.save({"model_state": model.state_dict()}, "weights.pth").'
    ) from None
  for key in ('model_state', 'state_dict', 'model', 'net'):  # 'net': the official classifiers.
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
      break
  if not isinstance(obj, dict) or not obj:
    raise CheckpointMismatchError(f'{path} holds no state dict (got {type(obj).__name__}).')
  out = {}
  for name, value in obj.items():
    if not isinstance(value, torch.Tensor):
      continue
    name = name[len('module.'):] if name.startswith('module.') else name
    out[name] = value.detach().to(torch.float32).numpy() if value.is_floating_point() \
        else value.numpy()
  return out


def _head_prefix(state: StateDict) -> str:
  for prefix in _HEAD_PREFIXES:
    if f'{prefix}0.convs.0.0.weight' in state:
      return prefix
  raise CheckpointMismatchError('No DeepLabv3 head found: expected '
                                "'classifier.classifier.0.convs.0.0.weight' (VainF) or "
                                "'classifier.0.convs.0.0.weight' (torchvision).")


def infer_config(state: StateDict) -> dict[str, Any]:
  """DeepLabV3 attributes read from the weights' names and shapes.

  Returns:
    ``{'num_classes', 'backbone', 'width', 'aspp_features'}``.
  """
  head = _head_prefix(state)
  blocks = [len({k.split('.')[2] for k in state if k.startswith(f'backbone.layer{i}.')})
            for i in range(1, 5)]
  bottleneck = 'backbone.layer1.0.conv3.weight' in state
  names = {(3, 4, 6, 3, True): 'resnet50', (3, 4, 6, 3, False): 'resnet34',
           (2, 2, 2, 2, False): 'resnet18'}
  backbone = names.get((*blocks, bottleneck))
  if backbone is None:
    raise CheckpointMismatchError(f'Backbone with blocks {blocks} per stage '
                                  f'({"bottleneck" if bottleneck else "basic"}) is not supported.')
  return {'num_classes': int(state[f'{head}4.weight'].shape[0]), 'backbone': backbone,
          'width': int(state['backbone.conv1.weight'].shape[0]),
          'aspp_features': int(state[f'{head}0.convs.0.0.weight'].shape[0])}


def _pairs(model: DeepLabV3, backbone_prefix: str, head: str | None) -> list[tuple[str, str, str]]:
  """(flax ConvBN path, torch conv name, torch BN name) of every conv + BN."""
  b = backbone_prefix
  pairs = [('backbone/stem', f'{b}conv1', f'{b}bn1')]
  resnet = model.make_backbone(detached=True)
  convs = 3 if resnet.block.expansion == 4 else 2
  for i, blocks in enumerate(resnet.stage_sizes, start=1):
    for j in range(blocks):
      ours, theirs = f'backbone/stage{i}_block{j + 1}', f'{b}layer{i}.{j}'
      pairs += [(f'{ours}/conv{k}', f'{theirs}.conv{k}', f'{theirs}.bn{k}')
                for k in range(1, convs + 1)]
      pairs.append((f'{ours}/shortcut', f'{theirs}.downsample.0', f'{theirs}.downsample.1'))
  if head is not None:
    a = f'{head}0.'
    pairs += [('aspp/conv1x1', f'{a}convs.0.0', f'{a}convs.0.1')]
    pairs += [(f'aspp/atrous{r}', f'{a}convs.{r}.0', f'{a}convs.{r}.1') for r in (1, 2, 3)]
    pairs += [('aspp/pooling', f'{a}convs.4.1', f'{a}convs.4.2'),
              ('aspp/project', f'{a}project.0', f'{a}project.1'),
              ('head_conv', f'{head}1', f'{head}2')]
  return pairs


def _set(tree: dict, path: str, value: np.ndarray) -> None:
  *parents, leaf = path.split('/')
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def _get(tree: dict, path: str) -> Any:
  for p in path.split('/'):
    if not isinstance(tree, dict) or p not in tree:
      return None
    tree = tree[p]
  return tree


def _names(keys: list[str]) -> str:
  if not keys:
    return 'none'
  return str(keys) if len(keys) <= 6 else f'{len(keys)}, e.g. {keys[:6]}'


def convert(state: StateDict, model: DeepLabV3, *, backbone_prefix: str = 'backbone.',
            head: bool = True) -> Variables:
  """Maps a state dict onto ``model``'s variables, checking every name and shape.

  Args:
    state: from `load_state_dict`.
    model: the DeepLabV3 whose variables to fill (its padding is not checked:
      a PyTorch model is zero-padded).
    backbone_prefix: prefix of the ResNet names ('' for a plain torchvision ResNet).
    head: convert the DeepLab head too; False fills only ``backbone`` (and then
      only names under ``backbone_prefix`` must fit).

  Returns:
    ``{'params', 'batch_stats'}`` as float32 numpy trees; with ``head=False``
    only the backbone's subtrees.

  Raises:
    CheckpointMismatchError: naming the names the model needs that the state dict
      lacks and the names it holds that the model has no place for, or a shape
      differing from the model's.
  """
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  target = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
  prefix = _head_prefix(state) if head else None
  params, stats, used, missing = {}, {}, set(), []

  def put(tree: dict, path: str, name: str, transpose: bool = False) -> None:
    used.add(name)
    if name not in state:
      missing.append(name)
      return
    value = np.asarray(state[name], np.float32)
    # PyTorch (O, I, kh, kw) -> Flax (kh, kw, I, O).
    _set(tree, path, value.transpose(2, 3, 1, 0) if transpose else value)

  for ours, conv, bn in _pairs(model, backbone_prefix, prefix):
    if _get(target['params'], ours) is None:
      continue  # An identity shortcut.
    put(params, f'{ours}/conv/conv/kernel', f'{conv}.weight', transpose=True)
    put(params, f'{ours}/bn/scale', f'{bn}.weight')
    put(params, f'{ours}/bn/bias', f'{bn}.bias')
    put(stats, f'{ours}/bn/mean', f'{bn}.running_mean')
    put(stats, f'{ours}/bn/var', f'{bn}.running_var')
  if head:
    put(params, 'classifier/conv/kernel', f'{prefix}4.weight', transpose=True)
    put(params, 'classifier/conv/bias', f'{prefix}4.bias')
  scope = backbone_prefix if not head else ''
  left = sorted(k for k in state if k not in used and k.startswith(scope)
                and not any(s in k for s in _SKIPPED))
  if missing or left:
    part = 'backbone' if not head else 'DeepLabv3'
    hint = ' (is it a DeepLabv3, not v3+, checkpoint?)' if head and left else ''
    raise CheckpointMismatchError(
        f'The state dict does not fit a {model.backbone} {part} (width {model.width}): missing '
        f'keys {_names(sorted(missing))}; unexpected keys {_names(left)}{hint}.')
  _check_shapes({'params': params, 'batch_stats': stats}, target, head)
  return {'params': params, 'batch_stats': stats}


def _check_shapes(variables: Variables, target: Variables, head: bool) -> None:
  for collection in ('params', 'batch_stats'):
    expected = target[collection] if head else {'backbone': target[collection]['backbone']}
    flat = {'/'.join(str(k.key) for k in path): leaf.shape
            for path, leaf in jax.tree_util.tree_leaves_with_path(expected)}
    for path, shape in flat.items():
      got = _get(variables[collection], path)
      if got is None:
        raise CheckpointMismatchError(f'Nothing in the state dict for {collection}/{path}.')
      if got.shape != shape:
        raise CheckpointMismatchError(f'{collection}/{path}: the model needs shape {shape}, '
                                      f'the state dict gives {got.shape}.')


def convert_backbone(state: StateDict, model: DeepLabV3) -> Variables:
  """The ``backbone`` subtrees of ``model``'s variables from a torchvision ResNet.

  Args:
    state: from `load_state_dict`: a torchvision ResNet state dict (``conv1.weight``,
      ``layer1.0.conv1.weight``, ...; ``fc`` is skipped), e.g. the ImageNet weights
      the official DeepLabv3 starts from; or a DeepLabv3 one, whose
      ``backbone.``-prefixed names are taken (its head is ignored).
    model: the DeepLabV3 to start (width 64 for a torchvision ResNet).

  Returns:
    ``{'params': {'backbone': ...}, 'batch_stats': {'backbone': ...}}``, float32 numpy.

  Raises:
    CheckpointMismatchError: as `convert`.
  """
  prefix = 'backbone.' if 'backbone.conv1.weight' in state else ''
  return convert(state, model, backbone_prefix=prefix, head=False)


def import_deeplab(state: StateDict, **overrides: Any) -> tuple[DeepLabV3, Variables]:
  """A DeepLabV3 shaped like the state dict, and its variables.

  Args:
    state: from `load_state_dict`.
    **overrides: DeepLabV3 attributes to set, e.g. ``dtype=jnp.bfloat16``.

  Returns:
    (model, ``{'params', 'batch_stats'}``).
  """
  model = DeepLabV3(**{**infer_config(state), **overrides})
  return model, convert(state, model)
