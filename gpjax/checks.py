"""Field checks shared by every config: each raises `ConfigError` in one line naming the field,
its value and what is allowed."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable

from gpjax.errors import ConfigError

if TYPE_CHECKING:  # Annotations only: the training step also runs without ml_collections.
  import ml_collections

DTYPES = ('float32', 'bfloat16')



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


def positive(field: str, value: Any) -> None:
  """Raises ConfigError unless ``config.<field>`` is a finite float > 0 (a learning rate)."""
  if not isinstance(value, float) or not math.isfinite(value) or value <= 0:
    raise ConfigError(f'config.{field}={value!r} is not allowed; it must be a finite float > 0.')


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


def step_list(field: str, text: str) -> None:
  """A comma-separated list of training steps, each an int >= 1 ('' = none)."""
  for v in str(text).split(','):
    if v.strip() and not (v.strip().isdigit() and int(v) >= 1):
      raise ConfigError(f'config.{field}={text!r}: {v.strip()!r} is not a step; give '
                        "comma-separated integers >= 1, e.g. '100,300,1000', or ''.")
