"""gpjax.core.parallel: summing a step's results over batches."""

import jax.numpy as jnp
import numpy as np

from gpjax.core import parallel


def test_accumulate_sums_every_batch():
  batches = [{'x': np.full(3, i, np.int32)} for i in range(1, 5)]
  totals = parallel.accumulate(lambda b: {'sum': jnp.asarray(b['x']), 'n': jnp.ones((), jnp.int32)},
                           batches)
  np.testing.assert_array_equal(totals['sum'], [10, 10, 10])
  assert totals['n'] == 4 and isinstance(totals['sum'], np.ndarray)
  assert parallel.accumulate(lambda b: b, []) is None
