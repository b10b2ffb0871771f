"""Tasks: what a training run does that the core (`gpjax.core.trainer`) does not; one module each."""
