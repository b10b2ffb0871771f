"""Tasks: what a training run does that the core (`gpjax.trainer`) does not; one module each."""
