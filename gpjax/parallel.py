"""The device mesh, moving host batches onto it (single or multi-host), and summing a
step's results over batches."""

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh() -> jax.sharding.Mesh:
  """A 1D mesh named ``data`` over every device of every process."""
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Explicit,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def to_global(mesh: jax.sharding.Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """Assembles each process's slice (B_local, ...) into global arrays (B, ...)
  sharded along the batch over the ``data`` axis."""
  sharding = data_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def shard_step(fn, mesh: jax.sharding.Mesh, *, outputs: int = 1, donate: bool = False):
  """``jit(shard_map(fn))`` for a per-device step ``fn(state, batch)``: the state
  replicated, the batch split along the ``data`` axis, ``outputs`` replicated
  results; ``donate`` reuses the state's buffers for the new state."""
  out_specs = P() if outputs == 1 else (P(),) * outputs
  mapped = jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=out_specs)
  return jax.jit(mapped, donate_argnums=0 if donate else ())


def check_divisible(field: str, size: int, divisor: int, what: str) -> None:
  if size % divisor:
    from gpjax.validate import ConfigError
    raise ConfigError(f'{field}={size} must be divisible by the number of {what} ({divisor}).')


def accumulate(step: Callable[[Any], Any], batches: Iterable[Any]) -> Any:
  """The sum over ``batches`` of ``step(batch)`` (a tree of arrays), fetched to the host;
  None when there are no batches."""
  totals = None
  for batch in batches:
    sums = step(batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return None if totals is None else jax.device_get(totals)
