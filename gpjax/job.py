"""What `gpjax.main` runs: a job is a function of (config, workdir) and the check of its config.

A leaf module: tasks, probes and studies each declare their jobs with it, and
`gpjax.registry` gathers them into the one table that a config's ``job`` field names.
"""

import dataclasses
from typing import Any, Callable

Config = Any  # An ml_collections.ConfigDict (not imported: this module stays a leaf).


@dataclasses.dataclass(frozen=True)
class Job:
  """A job of ``python -m gpjax.main``.

  Attributes:
    run: ``run(config, workdir) -> results`` does the work and writes ``workdir``.
    check: ``check(config)`` raises `gpjax.errors.ConfigError` (one line) for a bad config,
      before any work: no devices, no data.
    summary: one line for ``--help``.
  """
  run: Callable[[Config, str], Any]
  check: Callable[[Config], None]
  summary: str
