"""Data: built-in tfds sets (`builtin`) and the step-indexed input pipeline (`input_pipeline`)."""
