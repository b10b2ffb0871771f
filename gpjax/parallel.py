"""The device mesh and moving host batches onto it (single or multi-host)."""

import jax
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


def check_divisible(field: str, size: int, divisor: int, what: str) -> None:
  if size % divisor:
    from gpjax.validate import ConfigError
    raise ConfigError(f'{field}={size} must be divisible by the number of {what} ({divisor}).')
