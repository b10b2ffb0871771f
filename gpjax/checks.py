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


def items(field: str, values: Any, kind: type = str, *, empty: bool = False) -> list[Any]:
  """The values of a tuple field (a list once read back from config.json), each a ``kind``
  (an int passes as a float); raises ConfigError unless they are, or when empty unless
  ``empty``."""
  def fits(v):
    if kind in (int, float) and isinstance(v, bool):
      return False
    return isinstance(v, (int, float) if kind is float else kind)

  if not isinstance(values, (tuple, list)) or not all(fits(v) for v in values) or (
      not values and not empty):
    example = {str: "('zero', 'none')", int: '(3, 5)', float: '(0.0, 1.0)'}.get(kind, '(...)')
    raise ConfigError(f'config.{field}={values!r} is not allowed; give a tuple of '
                      f'{kind.__name__}s, e.g. {example}.')
  return [kind(v) for v in values]


def step_list(field: str, steps: Any) -> None:
  """Raises ConfigError unless ``config.<field>`` is a tuple of training steps, each an
  int >= 1 (``()``: none)."""
  if any(v < 1 for v in items(field, steps, int, empty=True)):
    raise ConfigError(f'config.{field}={steps!r} is not allowed; give a tuple of steps >= 1, '
                      'e.g. (100, 300), or ().')
