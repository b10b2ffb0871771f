"""glibc malloc settings that keep freed memory in the process for XLA:CPU's next step.

XLA:CPU allocates each step's and each evaluation's buffers with malloc and frees them after.
By default glibc gives large freed blocks back to the kernel (unmapping them, trimming the
heap), and the next step faults fresh pages in again (the quick suite: 40 million page faults,
a tenth of its CPU time spent in the kernel). `keep_freed_memory` raises the
thresholds, for this process (``mallopt``) and for the processes it starts (glibc reads the
same settings from ``MALLOC_*_`` variables at start). Where libc has no ``mallopt`` (not
glibc) nothing changes. Results do not depend on it: only where freed memory goes.
"""

import ctypes
import os

# mallopt parameters (glibc's malloc.h) and the values set: blocks up to 32 MiB (glibc's
# largest mmap threshold) come from the heap, which keeps up to 1 GiB free at its top and
# grows 64 MiB at a time.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {'MALLOC_MMAP_THRESHOLD_': (_M_MMAP_THRESHOLD, 32 << 20),
            'MALLOC_TRIM_THRESHOLD_': (_M_TRIM_THRESHOLD, 1 << 30),
            'MALLOC_TOP_PAD_': (_M_TOP_PAD, 64 << 20)}


def keep_freed_memory() -> bool:
  """Sets `SETTINGS` in this process and in the environment of its children, each unless
  its variable is set already (glibc took the user's own at start); True where glibc took
  every one set here (False: another libc, nothing changed)."""
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  taken = True
  for variable, (parameter, value) in SETTINGS.items():
    if variable not in os.environ:
      os.environ[variable] = str(value)
      taken = mallopt(parameter, value) == 1 and taken
  return taken
