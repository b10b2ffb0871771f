"""A module imported at its first use, for the heavy libraries that only some jobs need
(matplotlib, Orbax): ``--help``, a config check or a probe without figures do not pay for
them."""

import importlib
from typing import Any, Callable


class Module:
  """Stands for the module ``name``; the first attribute read imports it (after ``before()``,
  e.g. choosing matplotlib's backend) and every read returns the module's attribute."""

  def __init__(self, name: str, before: Callable[[], None] = lambda: None):
    self._name, self._before = name, before

  def __getattr__(self, attr: str) -> Any:
    self._before()
    return getattr(importlib.import_module(self._name), attr)
