"""What every benchmark measures the same way: synchronised wall-clock times, the
environment of the run, FLOPs and memory of a compiled call, and the process's peak
resident memory."""

import datetime
import gc
import os
import resource
import sys
import time
from typing import Any, Callable

import flax
import jax


def first_call(fn: Callable[[], Any]) -> tuple[float, Any]:
  """Seconds of the first (compiling) call of ``fn``, and its result."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return time.perf_counter() - start, out


def times(fn: Callable[[], Any], repeats: int) -> list[float]:
  """Wall-clock seconds of ``repeats`` calls of ``fn``, each synchronised."""
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    seconds.append(time.perf_counter() - start)
  return seconds


def environment(argv: list[str]) -> dict[str, Any]:
  """The command, date, devices and versions of a record."""
  return {'command': ' '.join(['python -m gpjax.bench'] + argv),
          'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
          'device_kind': jax.devices()[0].device_kind, 'platform': jax.devices()[0].platform,
          'num_devices': jax.device_count(), 'jax_version': jax.__version__,
          'flax_version': flax.__version__,
          'load_average_1min_at_start': os.getloadavg()[0]}  # Other processes skew CPU timings.


def flops(compiled) -> float:
  """FLOPs of one call from XLA's cost analysis (per device; 0 if not reported)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per partition.
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))


def peak_memory_bytes() -> int | None:
  """The device's peak bytes in use so far in this process (None where unreported, as on
  CPU): it never goes down, so later rows of one run include earlier rows' peaks."""
  stats = jax.devices()[0].memory_stats()
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def peak_rss_bytes() -> int:
  """This process's peak resident memory so far (``ru_maxrss``), in bytes. On CPU it
  includes the device buffers; it never goes down, so it covers everything the process
  did before, imports and compiles included."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if sys.platform == 'darwin' else peak * 1024  # Linux counts KiB, macOS bytes.


def live_device_bytes() -> int:
  """Bytes of every device array alive in this process, over all devices, after a
  garbage collection: what a benchmark holds between calls (a call's own buffers are
  `compiled_memory_bytes`)."""
  gc.collect()
  return sum(a.nbytes for a in jax.live_arrays())


def compiled_memory_bytes(compiled) -> int | None:
  """XLA's buffer assignment of one call, per device: arguments + outputs + temporaries
  - donated aliases (this step alone, unlike `peak_memory_bytes`)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # Not every backend implements it.  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes -
             m.alias_size_in_bytes)
