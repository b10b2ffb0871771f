"""The device mesh, moving host batches onto it (single or multi-host), and summing a
step's results over batches."""

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from gpjax.errors import ConfigError

DATA_AXIS = 'data'


def make_mesh() -> jax.sharding.Mesh:
  """A 1D mesh named ``data`` over every device of every process."""
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Explicit,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _batch_spec(batch_axis: int) -> P:
  """Split along ``batch_axis`` (1 when a leading axis holds several runs' batches)."""
  return P(*(None,) * batch_axis, DATA_AXIS)


def data_sharded(mesh: jax.sharding.Mesh, batch_axis: int = 0) -> NamedSharding:
  return NamedSharding(mesh, _batch_spec(batch_axis))


def to_global(mesh: jax.sharding.Mesh, local_batch: Any, batch_axis: int = 0) -> Any:
  """Assembles each process's slice (B_local, ...) into global arrays (B, ...)
  sharded along the batch over the ``data`` axis; with ``batch_axis=1``, (R, B_local, ...)
  into (R, B, ...)."""
  sharding = data_sharded(mesh, batch_axis)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def shard_step(fn, mesh: jax.sharding.Mesh, *, outputs: int = 1, donate: bool = False,
               batch_axis: int = 0):
  """``jit(shard_map(fn))`` for a per-device step ``fn(state, batch)``: the state
  replicated, the batch split along its ``batch_axis`` over the ``data`` axis, ``outputs``
  replicated results; ``donate`` reuses the state's buffers for the new state."""
  out_specs = P() if outputs == 1 else (P(),) * outputs
  mapped = jax.shard_map(fn, mesh=mesh, in_specs=(P(), _batch_spec(batch_axis)),
                         out_specs=out_specs)
  return jax.jit(mapped, donate_argnums=0 if donate else ())


def check_divisible(field: str, size: int, divisor: int, what: str) -> None:
  if size % divisor:
    raise ConfigError(f'{field}={size} must be divisible by the number of {what} ({divisor}).')


def accumulate(step: Callable[[Any], Any], batches: Iterable[Any]) -> Any:
  """The sum over ``batches`` of ``step(batch)`` (a tree of arrays), fetched to the host;
  None when there are no batches."""
  totals = None
  for batch in batches:
    sums = step(batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return None if totals is None else jax.device_get(totals)
