"""Parameter initialisation schemes: Flax's (``'flax'``) or PyTorch 1.x defaults (``'pytorch'``).

The official models never set an initialiser, so they start from PyTorch's defaults:
conv and dense kernels ``kaiming_uniform_(a=sqrt(5))``, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), BatchNorm scale 1 and bias 0 (as Flax's).
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

INITS = ('flax', 'pytorch')
Initializer = Callable[..., jax.Array]

# kaiming_uniform_(a=sqrt(5)): gain^2 = 2 / (1 + 5), bound = gain * sqrt(3 / fan_in) = 1/sqrt(fan_in).
TORCH_KERNEL = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def check_init(init: str) -> str:
  if init not in INITS:
    raise ValueError(f'init={init!r} is not supported; choose one of {INITS}.')
  return init


def torch_bias(fan_in: int) -> Initializer:
  """PyTorch's bias initialiser of a layer with ``fan_in`` inputs per output."""
  bound = 1.0 / fan_in ** 0.5

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def kernel_and_bias(init: str, fan_in: int, kernel: Initializer) -> tuple[Initializer, Initializer]:
  """(kernel, bias) initialisers of a layer: ``kernel`` and zeros under 'flax', PyTorch's
  defaults for ``fan_in`` inputs per output (in_channels * k * k for a conv) under 'pytorch'."""
  if check_init(init) == 'pytorch':
    return TORCH_KERNEL, torch_bias(fan_in)
  return kernel, nn.initializers.zeros
