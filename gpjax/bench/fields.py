"""The benchmark configs' fields: checks of their tuple fields, and the record's settings."""

from typing import Any, Callable

from gpjax.errors import ConfigError


def each(field: str, values: Any, check: Callable[..., None], *args: Any) -> None:
  """Raises ConfigError unless ``config.<field>`` is a non-empty tuple whose every item passes
  ``check(f'{field}[i]', item, *args)`` (e.g. `gpjax.checks.at_least`, `one_of`)."""
  if not isinstance(values, (tuple, list)) or not values:
    raise ConfigError(f'config.{field}={values!r} is not allowed; give a non-empty tuple, '
                      f'e.g. --config.{field}="(a, b)".')
  for i, value in enumerate(values):
    if isinstance(value, str) and ',' in value:  # --config.modes=a,b gives ('a,b',).
      raise ConfigError(f'config.{field}={values!r} is not allowed; write a tuple of strings '
                        f'as --config.{field}="(\'a\', \'b\')".')
    check(f'{field}[{i}]', value, *args)


def settings(config: Any) -> dict[str, Any]:
  """The benchmark's own fields of ``config`` (not its sub-configs) for its record."""
  return {k: v for k, v in config.items() if k != 'bench' and not hasattr(v, 'items')}
