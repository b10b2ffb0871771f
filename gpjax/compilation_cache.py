"""JAX's persistent compilation cache: XLA executables kept on disk across processes.

With it a second run of the same programs (the suite rerun in a fresh workdir, a resumed
run, the tests' subprocesses) loads each executable instead of compiling it again; XLA:CPU
executables are cached too (jax 0.10 and 0.11). The cache key covers the program, the
jax/jaxlib versions, XLA flags and the devices, not the host CPU's instruction set, so
`default_directory` keeps one directory per CPU: a directory shared by machines with
different CPUs could hand one of them code compiled for the other.
"""

import hashlib
import os

import jax
from jax.experimental.compilation_cache import compilation_cache


def cpu_fingerprint() -> str:
  """12 hex digits of this machine's CPU model name and feature flags ('' if unknown)."""
  try:
    with open('/proc/cpuinfo') as f:
      lines = [l for l in f if l.startswith(('model name', 'flags', 'Features'))]
  except OSError:
    return ''
  return hashlib.sha256(''.join(sorted(set(lines))).encode()).hexdigest()[:12]


def default_directory() -> str:
  """``$JAX_COMPILATION_CACHE_DIR`` when set, else
  ``${XDG_CACHE_HOME:-~/.cache}/gpjax/jax/<cpu>``, <cpu> `cpu_fingerprint`."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(root, 'gpjax', 'jax', cpu_fingerprint() or 'cpu')


def enable(directory: str) -> None:
  """Caches every compiled program in ``directory`` (created if missing); '' turns the
  cache off. Takes effect for the compilations after the call."""
  if not directory:
    jax.config.update('jax_enable_compilation_cache', False)
  else:
    os.makedirs(directory, exist_ok=True)
    jax.config.update('jax_enable_compilation_cache', True)
    jax.config.update('jax_compilation_cache_dir', directory)
    # JAX skips programs that compile in under 1 s by default: on CPU most of ours do.
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)  # Any size.
  compilation_cache.reset_cache()  # JAX reads these settings once, at its first compile.
