"""Building blocks shared by the backbones: conv + BatchNorm with a padding mode."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpjax.models.padding import PaddedConv


class ConvBN(nn.Module):
  """PaddedConv -> BatchNorm (-> ReLU).

  BatchNorm follows PyTorch's defaults (momentum 0.1 there is 0.9 here,
  eps 1e-5). With ``bn_axis_name`` set and ``train=True`` the batch statistics
  are averaged over that mesh axis, so data-parallel training matches a
  single-device run of the global batch.
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

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = PaddedConv(self.features, self.kernel_size, self.strides, self.padding,
                   self.dilation, dtype=self.dtype, param_init=self.param_init,
                   name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     axis_name=self.bn_axis_name if train else None,
                     dtype=self.dtype, name='bn')(x)
    return nn.relu(x) if self.relu else x
