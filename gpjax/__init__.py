"""gpjax: position information encoded channel-wise in CNNs, in JAX/Flax."""
