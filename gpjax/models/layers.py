"""Building blocks shared by the backbones: conv + BatchNorm with a padding mode."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpjax.models.padding import PaddedConv


class ConvBN(nn.Module):
  """PaddedConv -> BatchNorm (-> ReLU).

  BatchNorm follows PyTorch's defaults (eps 1e-5; momentum 0.1 there is
  ``bn_momentum`` 0.9 here: Flax keeps ``m x running + (1 - m) x batch``,
  PyTorch ``(1 - m) x running + m x batch``). With ``bn_axis_name`` set and
  ``train=True`` the batch statistics are averaged over that mesh axis, so
  data-parallel training matches a single-device run of the global batch.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: str = 'zero'
  dilation: int = 1
  relu: bool = True
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32
  param_init: str = 'flax'  # The conv's initialisation scheme (`gpjax.models.init`).
  bn_momentum: float = 0.9  # Decay of the running statistics (Flax convention).

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = PaddedConv(self.features, self.kernel_size, self.strides, self.padding,
                   self.dilation, dtype=self.dtype, param_init=self.param_init,
                   name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                     axis_name=self.bn_axis_name if train else None,
                     dtype=self.dtype, name='bn')(x)
    return nn.relu(x) if self.relu else x
