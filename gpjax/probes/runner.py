"""The one way a probe runs: load a trained run, evaluate it under a transformation, write
``results.json`` (with where its numbers come from) and the probe's figures.

A probe module (`gpjax.probes.permutation`, `invariance`, `attack`) defines a
``PROBE = Probe(...)``; `job` makes its ``gpjax.main`` job and studies call `run_probe`.
"""

import dataclasses
import functools
import os
import time
from typing import Any, Callable

import jax

from gpjax.core import writers
from gpjax.job import Job
from gpjax.tasks import runs

Config = Any  # ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class Probe:
  """What differs between probes.

  Attributes:
    check: ``check(config)`` raises ConfigError in one line for a bad config.
    load: ``load(config) -> runs.Run``, the run (and checkpoint) the config points at.
    evaluate: ``evaluate(config, run) -> results``, the probe's numbers.
    report: ``report(config, workdir, run, results)`` writes figures (process 0 only)
      and prints one line.
  """
  check: Callable[[Config], None]
  load: Callable[[Config], runs.Run]
  evaluate: Callable[[Config, runs.Run], dict[str, Any]]
  report: Callable[[Config, str, runs.Run, dict[str, Any]], None]


def run_probe(probe: Probe, config: Config, workdir: str) -> dict[str, Any]:
  """Checks ``config``, loads its run, evaluates it and writes ``workdir/results.json``
  (``seconds`` = the evaluation's wall time, plus `runs.provenance`); returns the results."""
  probe.check(config)
  run = probe.load(config)
  start = time.perf_counter()
  results = probe.evaluate(config, run)
  results['seconds'] = time.perf_counter() - start
  results.update(runs.provenance(config, run))
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    writers.write_json(os.path.join(workdir, 'results.json'), results)
    probe.report(config, workdir, run, results)
  return results


def job(probe: Probe, summary: str) -> Job:
  """The ``gpjax.main`` job of ``probe``."""
  return Job(functools.partial(run_probe, probe), probe.check, summary)
