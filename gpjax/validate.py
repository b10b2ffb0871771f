"""Config validation: one clear line per mistake, before any work starts."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable

from gpjax.data.canvas import BACKGROUNDS, PLACEMENTS
from gpjax.models.classifier import BACKBONES, HEADS, PERMUTE_LAYERS
from gpjax.models.init import INITS
from gpjax.models.padding import PADDINGS
from gpjax.models.resnet import STEMS

if TYPE_CHECKING:  # Annotations only: the training step also runs without ml_collections.
  import ml_collections

TASKS = ('location', 'semantic')
DTYPES = ('float32', 'bfloat16')
OPTIMIZERS = ('adam', 'adamw', 'sgd')


class ConfigError(ValueError):
  """A config field holds a value the code cannot use."""


def one_of(field: str, value: Any, allowed: Iterable[Any]) -> None:
  """Raises ConfigError unless ``config.<field>`` is one of ``allowed``."""
  allowed = tuple(allowed)
  if value not in allowed:
    raise ConfigError(f'config.{field}={value!r} is not allowed; choose one of {allowed}.')


def at_least(field: str, value: Any, low: float, kind: type = int) -> None:
  """Raises ConfigError unless ``config.<field>`` is a ``kind`` (never a bool) >= ``low``."""
  if not isinstance(value, kind) or isinstance(value, bool) or value < low:
    article = 'an' if kind is int else 'a'
    raise ConfigError(f'config.{field}={value!r} is not allowed; it must be {article} '
                      f'{kind.__name__} >= {low}.')


def below_one(field: str, value: Any) -> None:
  """Raises ConfigError unless ``config.<field>`` lies in [0, 1) (a momentum, a dropout rate)."""
  if not 0.0 <= value < 1.0:
    raise ConfigError(f'config.{field}={value!r} is not allowed; it must be in [0, 1).')


def steps_or_epochs(train: ml_collections.ConfigDict) -> None:
  """Raises ConfigError unless ``train.steps`` (int >= 0) or ``train.epochs`` sets a length."""
  at_least('train.steps', train.steps, 0)
  at_least('train.epochs', train.epochs, 0, float)
  if train.steps == 0 and train.epochs <= 0:
    raise ConfigError('config.train.steps=0 and config.train.epochs=0: set one of them > 0.')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field, its value and what is allowed."""
  one_of('task', config.task, TASKS)
  at_least('seed', config.seed, 0)
  d, m, t = config.data, config.model, config.train
  at_least('data.grid', d.grid, 1)
  one_of('data.background', d.background, BACKGROUNDS)
  at_least('data.image_size', d.image_size, 0)
  one_of('model.backbone', m.backbone, BACKBONES)
  one_of('model.padding', m.padding, PADDINGS)
  one_of('model.head', m.head, HEADS)
  one_of('model.permute_layer', m.permute_layer, PERMUTE_LAYERS)
  at_least('model.width', m.width, 1)
  one_of('model.stem', m.stem, STEMS)
  one_of('model.init', m.init, INITS)
  one_of('model.dtype', m.dtype, DTYPES)
  steps_or_epochs(t)
  at_least('train.batch_size', t.batch_size, 1)
  one_of('train.optimizer', t.optimizer, OPTIMIZERS)
  at_least('train.learning_rate', t.learning_rate, 0.0, float)
  for name in ('b1', 'b2'):
    below_one(f'train.{name}', t[name])
  at_least('train.weight_decay', t.weight_decay, 0.0, float)
  at_least('train.log_every', t.log_every, 1)
  at_least('train.eval_every', t.eval_every, 0)
  step_list('train.eval_at', t.eval_at)
  step_list('train.keep_at', t.keep_at)
  at_least('train.checkpoint_every', t.checkpoint_every, 0)
  at_least('train.keep_checkpoints', t.keep_checkpoints, 1)
  at_least('eval.batch_size', config.eval.batch_size, 1)
  at_least('eval.seed', config.eval.seed, 0)
  at_least('eval.orderings', config.eval.orderings, 1)
  at_least('eval.ordering_chunk', config.eval.ordering_chunk, 1)
  validate_augshift(config)


def step_list(field: str, text: str) -> None:
  """A comma-separated list of training steps, each an int >= 1 ('' = none)."""
  for v in str(text).split(','):
    if v.strip() and not (v.strip().isdigit() and int(v) >= 1):
      raise ConfigError(f'config.{field}={text!r}: {v.strip()!r} is not a step; give '
                        "comma-separated integers >= 1, e.g. '100,300,1000', or ''.")


def validate_imported(config: ml_collections.ConfigDict) -> None:
  """The ``evaluate_torch`` job: a classification config plus an existing PyTorch file."""
  from gpjax.interop import torch_import  # It imports this module's ConfigError.
  validate(config)
  path = config.source.torch_checkpoint
  if not path or not os.path.isfile(path):
    raise ConfigError(f'config.source.torch_checkpoint={path!r} is not a file: give an official '
                      'GAPNet/PermuteNet checkpoint (.pth).')
  torch_import.check_checkpoint_file('source.torch_checkpoint', path)


def validate_augshift(config: ml_collections.ConfigDict) -> None:
  """The ``augshift`` section: AugShift needs a label that does not move with the image."""
  a = config.augshift
  if not isinstance(a.enabled, bool):
    raise ConfigError(f'config.augshift.enabled={a.enabled!r} is not allowed; it must be a bool.')
  at_least('augshift.weight', a.weight, 0.0, float)
  one_of('augshift.placement', a.placement, PLACEMENTS)
  at_least('augshift.max_shift', a.max_shift, 0)
  one_of('augshift.copies', a.copies, (1, 2))
  if a.copies == 1 and a.weight:
    raise ConfigError(f'config.augshift.weight={a.weight!r} needs config.augshift.copies=2: '
                      'with one copy per image there is no second latent to match.')
  if a.placement == 'cell' and a.max_shift:
    raise ConfigError(f'config.augshift.max_shift={a.max_shift!r} needs '
                      "config.augshift.placement='pixel': cell placements are whole cells apart.")
  if a.enabled and config.task == 'location':
    raise ConfigError("config.augshift.enabled=True with config.task='location': AugShift "
                      'trains the two shifted copies of an image to give the same output, but '
                      "a location label changes with the shift. Use config.task='semantic'.")
