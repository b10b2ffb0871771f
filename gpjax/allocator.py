"""glibc malloc settings that keep freed memory in the process for XLA:CPU's next step.

XLA:CPU allocates each step's buffers with malloc and frees them after. By default glibc
serves large blocks from fresh mappings (mmap, or a new heap of a thread's arena) and hands
them back to the kernel when freed, so every step faults its pages in again: the quick suite
took 40 million page faults, a tenth of its CPU time in the kernel, most of them in the
segmentation study's YNNPACK fusions. `keep_freed_memory` makes every block come from the one
main heap, which keeps up to 1 GiB free for reuse: for this process (``mallopt``, before JAX
starts its threads) and for the processes it starts (glibc reads the same settings from
``MALLOC_*`` variables at start). Only where JAX runs on the CPU: with an accelerator, threads
of its runtime would share one arena. Results do not depend on it, only where memory goes.
"""

import ctypes
import importlib.metadata
import importlib.util
import os

# Variable -> (mallopt parameter of glibc's malloc.h, value): one arena; no mmap, so large
# blocks come from the heap too; the heap keeps up to 1 GiB free at its top and grows 64 MiB
# at a time.
SETTINGS = {'MALLOC_ARENA_MAX': (-8, 1), 'MALLOC_MMAP_MAX_': (-4, 0),
            'MALLOC_TRIM_THRESHOLD_': (-1, 1 << 30), 'MALLOC_TOP_PAD_': (-2, 64 << 20)}


def cpu_only() -> bool:
  """Whether JAX will run on the CPU, known before it starts: ``JAX_PLATFORMS`` is 'cpu', or
  it is unset and no accelerator plugin (CUDA, ROCm: ``jax_plugins``; TPU: libtpu) is
  installed."""
  platforms = os.environ.get('JAX_PLATFORMS', '').strip()
  if platforms:
    return platforms == 'cpu'
  return (not importlib.metadata.entry_points(group='jax_plugins') and
          importlib.util.find_spec('jax_plugins') is None and
          importlib.util.find_spec('libtpu') is None)


def keep_freed_memory() -> bool:
  """On a CPU-only host, sets `SETTINGS` in this process and in the environment of its
  children, each unless its variable is set already (glibc took the user's own at start).
  Call it before JAX's first computation (its threads take arenas when they start). True
  where glibc took every one set here; False elsewhere (nothing changed)."""
  if not cpu_only():
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):  # Not glibc.
    return False
  taken = True
  for variable, (parameter, value) in SETTINGS.items():
    if variable not in os.environ:
      os.environ[variable] = str(value)
      taken = mallopt(parameter, value) == 1 and taken
  return taken
